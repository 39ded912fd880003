// One Yjs document (`#y:<room>`): the Y.Doc whose text `codemirror` the editor shows, the
// y-websocket provider on `/yjs/{room}`, presence through awareness (name, colour, cursor),
// and codraft's parts of that socket (docs/protocol.md, Yjs documents): refusals
// (4401/4403/4429 stop the provider until the page gives a password), the set-password
// extension message, read-only from the token, 4413 (stop: a reconnect would resend).
//
// It plays the part Session plays for OT documents, with the same page callbacks (status,
// users, synced, refused, access, password, error), so main.js keeps one page for both
// kinds. No DOM; the editor binding is the extension `collab()` returns (y-codemirror.next).

import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import * as encoding from "lib0/encoding";
import { Prec } from "@codemirror/state";
import { keymap } from "@codemirror/view";
import { refusalOf } from "./session.js";
import { selectionColor, userColor } from "./colors.js";

/** codraft's extension message on the y-websocket socket: varuint 100, then varString password. */
export const MESSAGE_PASSWORD = 100;
/** The shared text the editor is bound to (y-codemirror.next's usual name). */
export const TEXT_NAME = "codemirror";
/** The prefix of a Yjs document's id outside the socket (JWT patterns, /api/text): `y:notes`. */
export const ID_PREFIX = "y:";
/** Longest wait between two reconnect attempts. */
const MAX_BACKOFF_MS = 10000;

/** The binary frame that sets a Yjs document's password (`""` removes it). */
const isHighSurrogate = (unit) => unit >= 0xd800 && unit <= 0xdbff;
const isLowSurrogate = (unit) => unit >= 0xdc00 && unit <= 0xdfff;

export function passwordMessage(password) {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, MESSAGE_PASSWORD);
  encoding.writeVarString(encoder, password ?? "");
  return encoding.toUint8Array(encoder);
}

/** Whether a `read`/`write` claim pattern (an id, or a prefix then `*`) covers `id`. */
function patternMatches(pattern, id) {
  if (typeof pattern !== "string") return false;
  return pattern.endsWith("*") ? id.startsWith(pattern.slice(0, -1)) : pattern === id;
}

/**
 * What a JWT says about document `id`, read without checking its signature (the server
 * checks; this only shapes the page): `{readOnly, name}`, or null for no token or one that
 * is not a readable JWT. A token that grants `read` but not `write` is read-only, as the
 * gateway decides for OT documents (gateway/src/auth.rs).
 */
export function tokenAccess(token, id) {
  if (!token) return null;
  try {
    const part = token.split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== "object") return null;
    const covers = (list) => Array.isArray(list) && list.some((p) => patternMatches(p, id));
    const name = typeof claims.name === "string" && claims.name ? claims.name.slice(0, 64) : null;
    return { readOnly: !covers(claims.write) && covers(claims.read), name };
  } catch {
    return null;
  }
}

export class YjsSession {
  /**
   * @param {object} options
   * @param {string} options.serverUrl  ws(s)://host/yjs (the provider appends `/{room}`)
   * @param {string} options.room       the document's room name
   * @param {object} [options.on]       callbacks: status, users, synced, refused, access, password,
   *                                     error, tooLarge
   * @param {string} [options.password] the document's password (`otp=`), if known
   * @param {string} [options.token]    a JWT (`token=`)
   * @param {Function} [options.WebSocket]
   */
  constructor({ serverUrl, room, on = {}, password = null, token = null, WebSocket = globalThis.WebSocket }) {
    /** The room (document) name. */
    this.room = room;
    /** Page callbacks. */
    this.on = on;
    /** The document's password, sent as `otp=`; null if none known. */
    this.password = password || null;
    /** The JWT sent as `token=`, or null. */
    this.token = token || null;
    /** What the token says about this room (null: no token), read on the client; its
     * patterns name the document as `y:<room>` (docs/protocol.md, Yjs documents). */
    const access = tokenAccess(this.token, `${ID_PREFIX}${room}`);
    /** True when the token grants reading only: the server drops our updates. */
    this.readOnly = access?.readOnly ?? false;
    /** The name the token gives, which replaces the one chosen on the page. */
    this.tokenName = access?.name ?? null;
    /** Set while refused (password, token): the provider is stopped until the page says. */
    this.halted = false;
    /** Local changes made since the last sync (not known to have reached the server). */
    this.pendingChanges = 0;
    /** Other users present: awareness client id → {name, hue, color}. */
    this.users = new Map();
    /** `users` as last told to the page, to tell only changes. */
    this.usersSignature = "[]";
    /** Whether this connection has synced. */
    this.synced = false;

    /** The shared document and its text. */
    this.doc = new Y.Doc();
    this.text = this.doc.getText(TEXT_NAME);
    /** Undo/redo of our own edits only (never another user's). */
    this.undoManager = new Y.UndoManager(this.text);

    this.provider = new WebsocketProvider(serverUrl, room, this.doc, {
      connect: false,
      params: this.params(),
      WebSocketPolyfill: WebSocket,
      // Tabs of one browser talk through the server only, so a refused or read-only tab
      // never reaches the document through another tab's connection.
      disableBc: true,
      maxBackoffTime: MAX_BACKOFF_MS,
      shouldReconnect: () => !this.halted,
    });
    /** Presence: our name, colour and cursor, and everyone else's. */
    this.awareness = this.provider.awareness;

    this.provider.on("status", ({ status }) => {
      // "connected" is the socket opening; the page hears "connected" once synced.
      if (status === "connecting") this.on.status?.("connecting", { attempt: this.provider.wsUnsuccessfulReconnects });
    });
    this.provider.on("sync", (synced) => {
      this.synced = synced;
      if (!synced) return;
      this.pendingChanges = 0;
      this.on.status?.("connected", {});
      this.on.synced?.();
    });
    this.provider.on("connection-close", (event) => this.closed(event));
    this.doc.on("update", (_update, origin) => {
      if (origin !== this.provider && !this.synced) this.pendingChanges++;
    });
    this.awareness.on("change", () => this.collectUsers());
  }

  /** The editor extensions that bind CodeMirror to the shared text and show others' cursors. */
  collab() {
    return [
      Prec.high(keymap.of(yUndoManagerKeymap)),
      yCollab(this.text, this.awareness, { undoManager: this.undoManager }),
    ];
  }

  /** Opens the first connection; tells the page what the token says. */
  start() {
    if (this.token && (this.readOnly || this.tokenName)) {
      this.on.access?.({ readOnly: this.readOnly, name: this.tokenName });
    }
    this.provider.connect();
  }

  /** Closes the socket for good. */
  stop() {
    this.halted = true;
    this.provider.destroy();
    this.awareness.destroy();
  }

  /** Skips the backoff wait (the browser came back online, or the user asked). */
  reconnectNow() {
    if (this.halted || this.provider.ws) return;
    this.provider.connect();
  }

  /** Tries again with `password` after a refusal (or to use a new one from now on). */
  usePassword(password) {
    this.password = password || null;
    this.provider.params = this.params();
    if (this.halted) {
      this.halted = false;
      this.provider.connect();
    }
  }

  /**
   * Protects the document with `password`, or removes its password (null). Returns false
   * when there is no open connection to send it on.
   */
  setPassword(password) {
    const ws = this.provider.ws;
    if (!this.provider.wsconnected || !ws || ws.readyState !== 1) return false;
    ws.send(passwordMessage(password));
    this.password = password || null;
    this.provider.params = this.params();
    this.on.password?.(this.password);
    return true;
  }

  /** Our display name and hue, for the others' user lists and our caret's label. */
  setInfo({ name, hue }) {
    const shown = this.tokenName ?? name;
    const before = this.awareness.getLocalState()?.user;
    let color = userColor(hue);
    // y-codemirror.next redraws a remote caret (and its name label) only when its colour
    // string changes: its widget compares colours alone. A new name in the same colour is
    // therefore sent as the same colour written another way, with an explicit opaque alpha.
    if (before && before.name !== shown && before.color === color) color = color.replace(/\)$/, " / 1)");
    // (setLocalState rather than setLocalStateField, which does nothing after `leave`.)
    const user = { name: shown, color, colorLight: selectionColor(hue), hue };
    this.awareness.setLocalState({ ...this.awareness.getLocalState(), user });
  }

  /**
   * Makes the document's text `text` by one edit of this page (a restore from the history):
   * the common start and end stay, the middle is replaced, so the others' carets and edits
   * outside it keep their places. The undo manager tracks it like typing. Refused (an
   * Error) on a read-only session, whose edits the server would drop.
   */
  replaceText(text) {
    if (this.readOnly) throw new Error("your token may read this document but not change it");
    const now = this.text.toString();
    const most = Math.min(now.length, text.length);
    let start = 0;
    while (start < most && now.charCodeAt(start) === text.charCodeAt(start)) start++;
    let end = 0;
    while (end < most - start && now.charCodeAt(now.length - 1 - end) === text.charCodeAt(text.length - 1 - end)) end++;
    // Y.Text counts UTF-16 units: never keep half of a surrogate pair.
    if (start > 0 && isHighSurrogate(now.charCodeAt(start - 1))) start--;
    if (end > 0 && isLowSurrogate(now.charCodeAt(now.length - end))) end--;
    this.doc.transact(() => {
      this.text.delete(start, now.length - start - end);
      this.text.insert(start, text.slice(start, text.length - end));
    });
  }

  /**
   * Says goodbye in awareness (the page is going), so the others drop our caret and entry
   * at once rather than when our state times out; `setInfo` says hello again.
   */
  leave() {
    this.awareness.setLocalState(null);
  }

  /** The language stays on this page: Yjs documents carry none. */
  setLanguage() {}

  // ---- internals -------------------------------------------------------------------------

  params() {
    const params = {};
    if (this.password) params.otp = this.password;
    if (this.token) params.token = this.token;
    return params;
  }

  /** A connection ended: `event` is the server's close, or null when we closed it. */
  closed(event) {
    this.synced = false;
    if (this.halted || !event) {
      if (!this.halted) this.on.status?.("disconnected", { retryInMs: this.nextDelay(), attempt: this.provider.wsUnsuccessfulReconnects + 1 });
      return;
    }
    // Refused sockets carry no JSON `Refused` message here, only the close's code and a
    // reason that starts with the refusal's kind (docs/protocol.md, Yjs documents).
    const refusal = refusalOf(event.code, event.reason, null, !!this.password);
    if (refusal) {
      // Retrying cannot help until the password or token changes: the provider stops
      // (shouldReconnect) and waits for the page.
      this.halted = true;
      this.on.status?.("refused", refusal);
      this.on.refused?.(refusal);
      return;
    }
    if (event.code === 4413) {
      // The server kept nothing of an update over its limits, and every reconnect would
      // send it again (sync step 2): stop, and let the person copy their text and reload.
      this.halted = true;
      this.provider.disconnect();
      this.on.status?.("disconnected", { stopped: true });
      this.on.tooLarge?.({ message: event.reason, text: this.text.toString() });
      return;
    }
    if (event.code >= 4000 && event.code < 5000 && event.reason) {
      this.on.error?.({ code: event.code, message: event.reason, closing: true });
    }
    this.on.status?.("disconnected", { retryInMs: this.nextDelay(), attempt: this.provider.wsUnsuccessfulReconnects + 1 });
  }

  /** The provider's wait before its next attempt (called before it counts this failure). */
  nextDelay() {
    return Math.min(2 ** (this.provider.wsUnsuccessfulReconnects + 1) * 100, MAX_BACKOFF_MS);
  }

  /**
   * Rebuilds `users` from awareness and tells the page when someone came, went or changed
   * name or colour (not on every cursor move: awareness changes with each of those, and our
   * own cursor changes while the editor is in the middle of an update).
   */
  collectUsers() {
    const users = new Map();
    for (const [id, state] of this.awareness.getStates()) {
      if (id === this.doc.clientID) continue;
      const user = state?.user ?? {};
      const hue = Number.isInteger(user.hue) && user.hue >= 0 && user.hue < 360 ? user.hue : null;
      const name = typeof user.name === "string" && user.name.trim() ? user.name.trim().slice(0, 64) : "Anonymous";
      users.set(id, { name, hue, color: hue === null && typeof user.color === "string" ? user.color : null });
    }
    const signature = JSON.stringify([...users]);
    if (signature === this.usersSignature) return;
    this.usersSignature = signature;
    this.users = users;
    this.on.users?.(this.users);
  }
}
