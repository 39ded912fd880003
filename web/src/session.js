// One editing session on one document: the WebSocket, reconnecting with backoff, and the
// exactly-once extension of docs/protocol.md (client id, `seq` on every Edit, `resume=` on
// reconnect, re-sending what is unacknowledged once the first History has arrived).
//
// It knows nothing of the DOM or of CodeMirror: the editor is reached through a small
// adapter ({getText, applyRemote, replaceText, cursorData}) and the page through callbacks,
// so the OT bookkeeping lives in ot.js and the presentation in main.js.

import { OTClient, TextOperation, transformIndex } from "./ot.js";

/** Close codes after which the unacknowledged edits cannot be sent again as they are. */
const DISCARD_PENDING = new Set([4409, 4413]);
/** Close codes that refuse this tab until something changes (password, token): no retry. */
const REFUSED = new Set([4401, 4403]);
/** Refusal kinds about the token (the rest of 4401 is about the password). */
const TOKEN_KINDS = new Set(["token_required", "token_invalid", "not_granted"]);
/** Give up on a connection that has not delivered its first History in this long. */
const CONNECT_TIMEOUT_MS = 15000;
/** Coalesce cursor updates to at most one per this interval. */
const CURSOR_INTERVAL_MS = 40;

export class Session {
  /**
   * @param {object} options
   * @param {string} options.socketUrl  ws(s)://host/api/socket/{id}, without a query
   * @param {string} options.clientId   this tab's client id (the `client=` parameter)
   * @param {object} options.editor     {getText(), applyRemote(op), replaceText(text), cursorData()}
   * @param {object} [options.on]       callbacks: status, users, cursors, language, error, lost,
   *                                     synced, refused, access, password
   * @param {string} [options.password] the document's password (`otp=`), if known
   * @param {string} [options.token]    a JWT for a gateway that requires one (`token=`)
   * @param {Function} [options.WebSocket]
   */
  constructor({ socketUrl, clientId, editor, on = {}, password = null, token = null, WebSocket = globalThis.WebSocket }) {
    /** Socket address without the query string. */
    this.socketUrl = socketUrl;
    /** This tab's client id, stable across reconnects. */
    this.clientId = clientId;
    /** The editor adapter. */
    this.editor = editor;
    /** Page callbacks. */
    this.on = on;
    /** The WebSocket constructor (injectable for tests). */
    this.WebSocket = WebSocket;
    /** The document's password, sent as `otp=` on every connection; null if none known. */
    this.password = password || null;
    /** The JWT sent as `token=`, or null. */
    this.token = token || null;
    /** True when the server says this connection may only read (Access / Joined). */
    this.readOnly = false;
    /** The `Refused` message of this connection, before its close. */
    this.refusal = null;
    /** Set while refused (wrong password, no token): no reconnect until the page says. */
    this.halted = false;
    /** Why pending edits were dropped at the last close (a close code), for the page. */
    this.discardCode = null;

    /** Outstanding edit, buffer, seq numbers and this connection's revision. */
    this.ot = new OTClient();
    /** The current socket, or null between connections. */
    this.ws = null;
    /** This connection's user id (Identity). */
    this.me = null;
    /** This connection's Joined message, or null. */
    this.joined = null;
    /** True once this connection's first History has been applied. */
    this.synced = false;
    /** True once any connection has synced: the editor holds the document. */
    this.everSynced = false;
    /** Log revision of the server text we hold (the `resume=` value), or null if unknown. */
    this.heldLogRevision = null;
    /** Log revision held before this connection's first entry (so held = base + revision). */
    this.connLogBase = null;
    /** The server's text at heldLogRevision (our text without pending edits). */
    this.serverText = "";
    /** Set after 4409/4413: next connection starts fresh and drops what is pending. */
    this.discardPending = false;

    /** Other users: id → {name, hue}. */
    this.users = new Map();
    /** Other users' cursors on our current text, in code points: id → {cursors, selections}. */
    this.cursors = new Map();
    /** Our name and hue, sent as ClientInfo on every connection. */
    this.info = null;
    /** A SetLanguage chosen while disconnected, sent on the next sync. */
    this.pendingLanguage = null;

    /** Consecutive failed connection attempts, for the backoff. */
    this.attempt = 0;
    this.retryTimer = null;
    this.connectTimer = null;
    this.cursorTimer = null;
    this.cursorDirty = false;
    /** The last Error message on this connection, so its close is not reported twice. */
    this.lastError = null;
    this.stopped = false;
  }

  /** Opens the first connection. */
  start() {
    this.connect();
  }

  /** Closes the socket for good. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.cursorTimer);
    this.ws?.close(1000);
  }

  /** Skips the backoff wait (the browser came back online, or the user asked). */
  reconnectNow() {
    if (this.ws || this.stopped || this.halted) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  /** Tries again with `password` after a refusal (or to use a new one from now on). */
  usePassword(password) {
    this.password = password || null;
    if (this.halted) {
      this.halted = false;
      this.attempt = 0;
      this.reconnectNow();
    }
  }

  /** Protects the document with `password`, or removes its password (null). */
  setPassword(password) {
    this.send({ SetOtp: password || null });
  }

  /** Number of local edits (runs of typing at one place) the server has not acknowledged. */
  get pendingChanges() {
    return this.ot.pendingChanges;
  }

  // ---- from the editor and the page ------------------------------------------------------

  /** A local edit, in code points on the text before it. */
  localEdit(op) {
    // A reader's editor is read-only; this guards the protocol should a change slip through.
    if (op.isNoop() || this.readOnly) return;
    for (const data of this.cursors.values()) transformCursor(data, op);
    const toSend = this.ot.applyClient(op);
    if (toSend) this.sendEdit(toSend);
  }

  /** The local selection moved; it is sent (coalesced) when the protocol allows. */
  cursorMoved() {
    this.cursorDirty = true;
    if (!this.cursorTimer) {
      this.cursorTimer = setTimeout(() => {
        this.cursorTimer = null;
        this.flushCursor();
      }, CURSOR_INTERVAL_MS);
    }
  }

  /** Our display name and hue. */
  setInfo(info) {
    this.info = info;
    if (this.ws && this.ws.readyState === 1) this.send({ ClientInfo: info });
  }

  /** Sets the document's language for everyone. */
  setLanguage(language) {
    if (this.synced) this.send({ SetLanguage: language });
    else this.pendingLanguage = language;
  }

  // ---- connection ------------------------------------------------------------------------

  connect() {
    if (this.stopped) return;
    const params = new URLSearchParams({ client: this.clientId });
    if (this.password) params.set("otp", this.password);
    if (this.token) params.set("token", this.token);
    if (this.everSynced && !this.discardPending && this.heldLogRevision !== null) {
      params.set("resume", String(this.heldLogRevision));
    }
    this.me = null;
    this.joined = null;
    this.synced = false;
    this.lastError = null;
    this.refusal = null;
    this.ot.revision = 0;
    this.users.clear();
    this.cursors.clear();
    this.on.users?.(this.users);
    this.on.cursors?.();
    this.on.status?.("connecting", { attempt: this.attempt });

    let ws;
    try {
      ws = new this.WebSocket(`${this.socketUrl}?${params}`);
    } catch (err) {
      this.on.error?.({ code: 0, message: `Could not open a connection: ${err.message}` });
      this.scheduleReconnect(0);
      return;
    }
    this.ws = ws;
    this.connectTimer = setTimeout(() => {
      if (this.ws !== ws || this.synced) return;
      this.lastError = { code: 4000 };
      this.on.error?.({ code: 0, message: "The server did not answer in time" });
      ws.close(4000, "connect timeout");
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      if (this.info) this.send({ ClientInfo: this.info });
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws || typeof event.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        console.warn("codraft: ignoring a frame that is not JSON");
        return;
      }
      try {
        this.handleMessage(msg);
      } catch (err) {
        this.lastError = { code: 4000 };
        if (err instanceof HistoryGap) {
          // Our text is still consistent: resume from it.
          console.warn("codraft:", err.message);
          ws.close(4000, "history gap");
          return;
        }
        // Something we cannot apply means our state no longer matches the server's:
        // start over from the server's text rather than edit a diverged document.
        console.error("codraft: cannot apply a server message", err, msg);
        this.on.error?.({ code: 0, message: "The document got out of sync; reloading it from the server" });
        this.discardPending = true;
        ws.close(4000, "desynchronized");
      }
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.handleClose(event.code, event.reason);
    };
  }

  handleClose(code, reason) {
    clearTimeout(this.connectTimer);
    this.ws = null;
    this.synced = false;
    if (this.stopped) return;
    const refusal = this.refusalOf(code, reason);
    if (refusal) {
      // Retrying cannot help until the password or token changes: wait for the page.
      this.halted = true;
      this.on.status?.("refused", refusal);
      this.on.refused?.(refusal);
      return;
    }
    if (DISCARD_PENDING.has(code)) {
      this.discardPending = true;
      this.discardCode = code;
    }
    if (code >= 4000 && code < 5000 && this.lastError?.code !== code && reason) {
      this.on.error?.({ code, message: reason, closing: true });
    }
    this.scheduleReconnect(code === 4429 ? 3000 : 0);
  }

  /** The refusal a close means, or null (see `refusalOf`). */
  refusalOf(code, reason) {
    return refusalOf(code, reason, this.refusal, !!this.password);
  }

  scheduleReconnect(minimumMs) {
    const base = Math.min(10000, 500 * 2 ** Math.min(this.attempt, 5));
    const delay = Math.max(minimumMs, Math.round(base * (0.5 + Math.random() * 0.5)));
    this.attempt++;
    this.on.status?.("disconnected", { retryInMs: delay, attempt: this.attempt });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg));
  }

  /** Sends an edit now if this connection may (it has synced); else the sync sends it. */
  sendEdit({ op, seq }) {
    if (!this.synced) return;
    this.send({ Edit: { revision: this.ot.revision, operation: op.toJSON(), seq } });
  }

  flushCursor() {
    // Like Rustpad: while a buffer is held the server's text is too far behind our
    // positions; the acknowledgement that sends the buffer sends the cursor too.
    if (!this.cursorDirty || !this.synced || this.ot.buffer) return;
    this.cursorDirty = false;
    this.send({ CursorData: this.editor.cursorData() });
  }

  // ---- server messages -------------------------------------------------------------------

  handleMessage(msg) {
    if (!msg || typeof msg !== "object") return;
    if ("Identity" in msg) {
      this.me = msg.Identity;
    } else if ("Access" in msg) {
      this.readOnly = !!msg.Access.read_only;
      this.on.access?.({ readOnly: this.readOnly, name: msg.Access.name ?? null });
    } else if ("Joined" in msg) {
      this.joined = msg.Joined;
      if (msg.Joined.read_only && !this.readOnly) {
        this.readOnly = true;
        this.on.access?.({ readOnly: true, name: null });
      }
    } else if ("Refused" in msg) {
      this.refusal = msg.Refused;
    } else if ("OTP" in msg) {
      // The password changed while we are in: reconnects need the new one.
      this.password = msg.OTP || null;
      this.on.password?.(this.password);
    } else if ("History" in msg) {
      const { start, operations } = msg.History;
      if (!this.synced) this.firstHistory(start, operations);
      else this.history(start, operations);
    } else if ("Language" in msg) {
      this.on.language?.(msg.Language);
    } else if ("UserInfo" in msg) {
      const { id, info } = msg.UserInfo;
      if (id === this.me) return;
      if (info) this.users.set(id, info);
      else {
        this.users.delete(id);
        this.cursors.delete(id);
        this.on.cursors?.();
      }
      this.on.users?.(this.users);
    } else if ("UserCursor" in msg) {
      const { id, data } = msg.UserCursor;
      if (id === this.me) return;
      // The server's positions are on its text; ours has our pending edits on top.
      const t = (p) => this.ot.transformIncomingIndex(p);
      this.cursors.set(id, {
        cursors: (data.cursors ?? []).map(t),
        selections: (data.selections ?? []).map(([a, b]) => [t(a), t(b)]),
      });
      this.on.cursors?.();
    } else if ("Error" in msg) {
      this.lastError = msg.Error;
      this.on.error?.(msg.Error);
    }
  }

  /** A History message after the first on this connection. */
  history(start, entries) {
    if (start > this.ot.revision) {
      throw new HistoryGap(`History starts at ${start}, past our revision ${this.ot.revision}`);
    }
    for (let i = this.ot.revision - start; i < entries.length; i++) this.applyEntry(entries[i]);
  }

  /** One History entry: our acknowledgement, or someone else's edit to merge. */
  applyEntry(entry) {
    const op = TextOperation.fromJSON(entry.operation);
    this.serverText = op.apply(this.serverText);
    if (this.ot.isAck(entry, this.me)) {
      const next = this.ot.serverAck();
      if (next) this.sendEdit(next);
      this.flushCursor();
    } else {
      const local = this.ot.applyServer(op);
      for (const data of this.cursors.values()) transformCursor(data, local);
      const before = this.synced ? this.editor.cursorData().cursors : null;
      this.editor.applyRemote(local);
      // Others saw our caret one character off until we moved, for two reasons, both fixed
      // by saying where our caret is after a remote edit moved it, or moved it differently
      // from the server's idea: (1) CursorData carries no revision, so the server reads a
      // position we sent while this edit was on its way to us against its newer text; (2)
      // the server moves a caret after an insert right at it, but the editor keeps ours
      // before text another user inserts there.
      if (before) {
        const after = this.editor.cursorData().cursors;
        const stale = after.some((c, i) => c !== before[i] || c !== transformIndex(local, before[i]));
        if (stale || after.length !== before.length) this.cursorMoved();
      }
    }
    this.heldLogRevision = this.connLogBase === null ? null : this.connLogBase + this.ot.revision;
  }

  /**
   * The first History of a connection. Resumed: the entries we missed, applied as usual
   * (one may acknowledge our outstanding edit). Not resumed: the first entry is the whole
   * text; our pending edits are kept only where they provably still fit, otherwise the ones
   * the server has not committed are reported lost.
   */
  firstHistory(start, entries) {
    if (start !== 0) throw new Error(`first History starts at ${start}, not 0`);
    const joined = this.joined ?? { resumed: false, revision: null, last_seq: 0 };
    const lastSeq = joined.last_seq ?? 0;

    if (joined.resumed && this.everSynced && !this.discardPending) {
      this.connLogBase = joined.revision;
      for (const entry of entries) this.applyEntry(entry);
      const out = this.ot.outstanding;
      if (out && out.seq <= lastSeq) {
        // Committed, yet its entry was not among those we missed: cannot happen by the
        // protocol; resynchronise rather than wait for an acknowledgement that won't come.
        throw new Error(`edit ${out.seq} committed without an acknowledgement`);
      }
      this.ot.nextSeq = Math.max(this.ot.nextSeq, lastSeq + 1);
    } else {
      const [first, ...rest] = entries;
      const text = first ? TextOperation.fromJSON(first.operation).apply("") : "";
      this.reset(text, lastSeq);
      this.connLogBase = joined.revision === null || joined.revision === undefined ? null : joined.revision - 1;
      this.ot.revision = first ? 1 : 0;
      this.heldLogRevision = this.connLogBase === null ? null : this.connLogBase + this.ot.revision;
      for (const entry of rest) this.applyEntry(entry);
    }

    this.synced = true;
    this.everSynced = true;
    this.discardPending = false;
    this.attempt = 0;
    clearTimeout(this.connectTimer);
    if (this.ot.outstanding) this.sendEdit(this.ot.outstanding);
    if (this.pendingLanguage !== null) {
      this.send({ SetLanguage: this.pendingLanguage });
      this.pendingLanguage = null;
    }
    this.cursorDirty = true;
    this.flushCursor();
    this.on.status?.("connected", {});
    this.on.synced?.();
  }

  /** Replaces our text with the server's `text`, keeping pending edits that still fit. */
  reset(text, lastSeq) {
    const out = this.ot.outstanding;
    const buf = this.ot.buffer;
    const committed = !!out && out.seq <= lastSeq;
    const previousText = this.editor.getText();
    let lost = 0;
    if (out && !this.discardPending && !committed && text === this.serverText) {
      // Nothing changed on the server since our text: both still apply as they are.
    } else if (out && !this.discardPending && committed && text === out.op.apply(this.serverText)) {
      // Only our outstanding edit changed it: the buffer applies on top.
      this.ot.outstanding = buf ? { op: buf.op, seq: lastSeq + 1, edits: Math.max(1, buf.edits) } : null;
      this.ot.buffer = null;
    } else {
      // Edits with seq <= last_seq are in the text; the rest cannot be placed.
      if (out) lost = (committed ? 0 : out.edits) + (buf ? Math.max(committed ? 1 : 0, buf.edits) : 0);
      this.ot.outstanding = null;
      this.ot.buffer = null;
    }
    const out2 = this.ot.outstanding;
    this.ot.nextSeq = out2 ? Math.max(out2.seq + 1, lastSeq + 1) : lastSeq + 1;

    this.serverText = text;
    let local = text;
    if (out2) local = out2.op.apply(local);
    if (this.ot.buffer) local = this.ot.buffer.op.apply(local);
    this.editor.replaceText(local);
    if (lost > 0) this.on.lost?.({ count: lost, text: previousText, code: this.discardPending ? this.discardCode : null });
    this.discardCode = null;
  }
}

/**
 * The refusal a close means, or null: {code, kind, about, message, loginUrl}. `sent` is the
 * connection's `Refused` message, if one came before the close. Kinds are those of
 * docs/protocol.md (Refusals); a 4401 without one (the password changed while joining) is
 * a password refusal. Shared with the Yjs socket (yjs.js), which the server refuses alike.
 */
export function refusalOf(code, reason, sent, hasPassword) {
  let kind = sent?.error ?? /^([a-z_]+):/.exec(reason ?? "")?.[1] ?? null;
  if (code === 4429 && kind !== "too_many_guesses") return null;
  if (!REFUSED.has(code) && code !== 4429) return null;
  if (!kind || (code === 4401 && !TOKEN_KINDS.has(kind) && kind !== "password_required" && kind !== "wrong_password")) {
    kind = hasPassword ? "wrong_password" : "password_required";
  }
  return {
    code,
    kind,
    about: TOKEN_KINDS.has(kind) ? "token" : "password",
    message: sent?.message ?? String(reason ?? "").replace(/^[a-z_]+:\s*/, ""),
    loginUrl: sent?.login_url ?? null,
  };
}

/** Entries are missing between what we hold and a History message: reconnect and resume. */
class HistoryGap extends Error {}

/** Moves a user's cursor data through an operation applied to our text. */
function transformCursor(data, op) {
  data.cursors = data.cursors.map((c) => transformIndex(op, c));
  data.selections = data.selections.map(([a, b]) => [transformIndex(op, a), transformIndex(op, b)]);
}
