// The page: picks the document from the URL hash, sets up the editor and the session, and
// keeps the sidebar (language, share link, password, name and colour, users) and the
// connection status in step with them; opens the version history (history.js); asks for a
// protected document's password and says in words why the server refused. Entry point of the esbuild bundle (dist/app.js).
//
// URL: `#<document>` and optionally `&otp=<password>` and `&token=<jwt>` after it (or
// `?otp=` in the query). A token is kept in localStorage (`codraft:token`) for later
// visits; a password in sessionStorage for this tab. Both are taken off the address bar.
// `#y:<room>` opens the Yjs document of that room instead (yjs.js, loaded only then); the
// page around the editor is the same, less what Yjs documents do not have (a language, the
// history's authorship marks).

import "./app.css";
import { createEditor } from "./editor.js";
import { FILE_EXTENSIONS, LANGUAGES } from "./languages.js";
import { Session } from "./session.js";
import { describeError } from "./messages.js";
import { userColor } from "./colors.js";
import { createHistoryPanel } from "./history.js";

const DOC_ID = /^[A-Za-z0-9._-]{1,256}$/;
/** The hash prefix of a Yjs document: `#y:notes` is room `notes`, `#notes` the OT document. */
const YJS_PREFIX = "y:";
const CLIENT_ID = /^[A-Za-z0-9_-]{1,64}$/;
const ADJECTIVES = ["Amber", "Brisk", "Calm", "Clever", "Daring", "Eager", "Gentle", "Happy", "Jolly", "Keen", "Lucky", "Merry", "Nimble", "Quiet", "Swift", "Witty"];
const ANIMALS = ["Badger", "Crane", "Dolphin", "Falcon", "Fox", "Heron", "Koala", "Lynx", "Otter", "Owl", "Panda", "Puffin", "Raven", "Seal", "Tiger", "Wombat"];

const $ = (id) => document.getElementById(id);

/** `length` random characters from [a-z0-9]. */
function randomId(length) {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

function randomInt(n) {
  return crypto.getRandomValues(new Uint32Array(1))[0] % n;
}

/**
 * What the URL says: the document id from `#id` (a bare URL gets a fresh random document)
 * and its kind (`#y:id`: a Yjs document), and a password and token handed over with
 * `&otp=` / `&token=` after it (or `?otp=`). The address bar is left with `#id` (or
 * `#y:id`) only, so credentials are not shared by accident. `key` is that hash: the
 * document's name on this page (storage keys, share link), distinct for the two kinds.
 */
function readLocation() {
  const [head, ...rest] = location.hash.slice(1).split("&");
  let id = "";
  try {
    id = decodeURIComponent(head);
  } catch {
    id = "";
  }
  const yjs = id.startsWith(YJS_PREFIX);
  if (yjs) id = id.slice(YJS_PREFIX.length);
  const params = new URLSearchParams(rest.join("&"));
  const query = new URLSearchParams(location.search);
  const password = params.get("otp") ?? query.get("otp");
  const token = params.get("token") ?? query.get("token");
  const fresh = !DOC_ID.test(id);
  if (fresh) id = randomId(10);
  const key = `${yjs ? YJS_PREFIX : ""}${id}`;
  if (fresh || rest.length || query.has("otp") || query.has("token")) {
    query.delete("otp");
    query.delete("token");
    const search = query.toString();
    history.replaceState(null, "", `${location.pathname}${search ? `?${search}` : ""}#${key}`);
  }
  return { id, key, kind: yjs ? "yjs" : "ot", password, token };
}

/** The page's theme: "light" or "dark" as chosen, else the system's. */
function applyTheme(choice) {
  const dark = choice ? choice === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  return dark;
}

function storage(kind) {
  try {
    return window[kind];
  } catch {
    return null; // storage disabled: fall back to per-page values
  }
}

/**
 * This tab's client id: kept in sessionStorage across reloads, but a duplicated tab (which
 * copies sessionStorage) must not share it, or two tabs would number edits alike. A Web Lock
 * held for the page's lifetime tells a live owner apart; where locks are unavailable
 * (plain-http hosts other than localhost) the stored id is used as it is.
 */
async function claimClientId() {
  const store = storage("sessionStorage");
  let id = store?.getItem("codraft:client");
  if (!id || !CLIENT_ID.test(id)) id = randomId(16);
  if (navigator.locks?.request) {
    for (let tries = 0; tries < 4; tries++) {
      const held = await new Promise((resolve) => {
        navigator.locks
          .request(`codraft-client-${id}`, { ifAvailable: true }, (lock) => {
            resolve(!!lock);
            return lock ? new Promise(() => {}) : undefined; // hold until the page goes
          })
          .catch(() => resolve(true));
      });
      if (held) break;
      id = randomId(16);
    }
  }
  store?.setItem("codraft:client", id);
  return id;
}

/** Name and hue, remembered in localStorage; random the first time. */
function loadIdentity() {
  const store = storage("localStorage");
  let name = store?.getItem("codraft:name")?.trim();
  if (!name) name = `${ADJECTIVES[randomInt(ADJECTIVES.length)]} ${ANIMALS[randomInt(ANIMALS.length)]}`;
  let hue = Number.parseInt(store?.getItem("codraft:hue") ?? "", 10);
  if (!(hue >= 0 && hue < 360)) hue = randomInt(360);
  store?.setItem("codraft:name", name);
  store?.setItem("codraft:hue", String(hue));
  return { name, hue };
}

function saveIdentity({ name, hue }) {
  const store = storage("localStorage");
  store?.setItem("codraft:name", name);
  store?.setItem("codraft:hue", String(hue));
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** The notice strip above the editor: one message, an optional action, dismissable. */
function createBanner() {
  const root = $("banner");
  const text = $("banner-text");
  const action = $("banner-action");
  let sticky = false;
  let timer = null;
  $("banner-close").addEventListener("click", () => hide(true));
  function hide(force = false) {
    if (sticky && !force) return;
    root.hidden = true;
    sticky = false;
    clearTimeout(timer);
  }
  function show(message, { kind = "warning", actionLabel, onAction, keep = false, timeoutMs } = {}) {
    clearTimeout(timer);
    root.dataset.kind = kind;
    text.textContent = message;
    action.hidden = !actionLabel;
    action.textContent = actionLabel ?? "";
    action.onclick = onAction ?? null;
    root.hidden = false;
    sticky = keep;
    if (timeoutMs) timer = setTimeout(() => hide(true), timeoutMs);
  }
  return { show, hide, get sticky() { return sticky; } };
}

async function main() {
  const place = readLocation();
  const docId = place.id;
  const yjs = place.kind === "yjs";
  // The client id numbers OT edits (exactly-once); a Yjs document has no use for one.
  const clientId = yjs ? null : await claimClientId();
  let me = loadIdentity();
  const banner = createBanner();
  const local = storage("localStorage");
  const tab = storage("sessionStorage");
  const passwordKey = `codraft:otp:${place.key}`;
  if (place.token) local?.setItem("codraft:token", place.token);
  if (place.password) tab?.setItem(passwordKey, place.password);
  const token = place.token ?? local?.getItem("codraft:token") ?? null;
  let password = place.password ?? tab?.getItem(passwordKey) ?? null;
  /** Name the token gives; replaces the one chosen here. */
  let tokenName = null;

  document.title = `${place.key} · codraft`;
  $("doc-id").textContent = docId;
  $("kind-badge").hidden = !yjs;
  document.body.dataset.kind = place.kind;
  const shareBase = `${location.origin}${location.pathname}#${place.key}`;
  const shareUrl = () => (password ? `${shareBase}&otp=${encodeURIComponent(password)}` : shareBase);
  $("share").value = shareUrl();

  // ---- theme ----
  let dark = applyTheme(local?.getItem("codraft:theme"));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (!local?.getItem("codraft:theme")) dark = applyTheme(null);
    editor?.setDark(dark);
  });
  $("theme-toggle").addEventListener("click", () => {
    const next = dark ? "light" : "dark";
    local?.setItem("codraft:theme", next);
    dark = applyTheme(next);
    editor.setDark(dark);
  });

  // ---- sidebar (collapsed on narrow screens at first) ----
  const narrow = matchMedia("(max-width: 720px)");
  function showSidebar(open) {
    document.body.dataset.sidebar = open ? "open" : "closed";
    $("sidebar-toggle").setAttribute("aria-expanded", String(open));
  }
  showSidebar(!narrow.matches);
  $("sidebar-toggle").addEventListener("click", () => showSidebar(document.body.dataset.sidebar !== "open"));

  // ---- editor and session ----
  /** @type {Session | import("./yjs.js").YjsSession} */
  let session = null;
  let editor = null;
  const editorOptions = {
    dark,
    wrap: narrow.matches,
    placeholder: "This document is empty. Start typing — everyone with the link sees your changes as you make them.",
  };
  const on = {
    status: renderStatus,
    users: renderUsers,
    cursors: () => editor.refreshCursors(),
    language: applyLanguage,
    synced: () => {
      editor.setReadOnly(session.readOnly);
      $("gate").hidden = true;
      // The password that opened the document is the one to remember and share.
      rememberPassword(session.password);
      if (!banner.sticky) banner.hide();
    },
    access: ({ readOnly, name }) => {
      $("readonly-badge").hidden = !readOnly;
      document.body.dataset.access = readOnly ? "read" : "write";
      if (readOnly) editor.setReadOnly(true);
      $("password-field").hidden = readOnly;
      // A Yjs document's language is this page's own choice, so a reader may pick one.
      select.disabled = readOnly && !yjs;
      if (name) {
        tokenName = name;
        nameInput.value = name;
        nameInput.disabled = true;
        nameInput.title = "The name your sign-in gives you";
        renderUsers(session.users);
      }
    },
    password: (now) => {
      rememberPassword(now);
      banner.show(
        now
          ? `This document is now protected. Its password is “${now}”: share it with the people who should open it.`
          : "The password was removed: anyone with the link can open this document.",
        { kind: "info", keep: true },
      );
    },
    refused: showRefusal,
    error: ({ code, message, closing }) => {
      // Error messages with 4400 or 4403 leave the connection open; the rest close it.
      const closes = closing || (code !== 4400 && code !== 4403);
      banner.show(describeError(code, message), { kind: closes && code !== 4503 ? "error" : "warning", timeoutMs: closes ? 0 : 8000 });
    },
    tooLarge: ({ message, text }) => {
      banner.show(`${describeError(4413, message)} Reload the page to go on from the document as saved.`, {
        kind: "error",
        keep: true,
        actionLabel: "Copy my version",
        onAction: () => copyText(text).then(() => banner.show("Your version was copied to the clipboard.", { kind: "info", timeoutMs: 4000 })),
      });
    },
    lost: ({ count, text, code }) => {
      const why =
        code === 4413
          ? "the document reached its size limit."
          : "the server no longer had the history to place them.";
      banner.show(
        `Reconnected, but ${plural(count, "unsaved edit")} could not be saved: ${why} ` +
          "The editor now shows the document as saved on the server.",
        {
          kind: "error",
          keep: true,
          actionLabel: "Copy my version",
          onAction: () => copyText(text).then(() => banner.show("Your version was copied to the clipboard.", { kind: "info", timeoutMs: 4000 })),
        },
      );
    },
  };

  const wsBase = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`;
  if (yjs) {
    // Loaded only for Yjs documents (inlined in app.js: the gateway serves no other chunk).
    const { YjsSession } = await import("./yjs.js");
    session = new YjsSession({ serverUrl: `${wsBase}/yjs`, room: docId, password, token, on });
    editor = createEditor($("editor"), { ...editorOptions, collab: session.collab() });
  } else {
    editor = createEditor($("editor"), {
      ...editorOptions,
      onLocalChange: (op) => session.localEdit(op),
      onSelection: () => session.cursorMoved(),
      users: () => {
        const out = [];
        for (const [id, data] of session?.cursors ?? []) {
          const info = session.users.get(id);
          if (info) out.push({ name: info.name, hue: info.hue, ...data });
        }
        return out;
      },
    });
    session = new Session({
      socketUrl: `${wsBase}/api/socket/${encodeURIComponent(docId)}`,
      clientId,
      editor,
      password,
      token,
      on,
    });
  }
  session.setInfo(me);

  // ---- version history (a Yjs document's restore is this page's own edit) ----
  createHistoryPanel({
    docId: yjs ? `y:${docId}` : docId,
    credentials: () => ({ password, token }),
    notify: (message, kind) => banner.show(message, { kind, timeoutMs: kind === "error" ? 0 : 6000 }),
    restoreText: yjs ? (text) => session.replaceText(text) : null,
  });

  // ---- password: the gate in front of a protected document, and the sidebar controls ----
  function rememberPassword(now) {
    password = now || null;
    if (password) tab?.setItem(passwordKey, password);
    else tab?.removeItem(passwordKey);
    $("share").value = shareUrl();
    $("remove-password").hidden = !password;
    $("password-state").textContent = password
      ? `Protected: people need the password “${password}” (the share link includes it).`
      : "Anyone with the link can open this document.";
  }
  rememberPassword(password);

  function showRefusal({ about, kind, message, loginUrl }) {
    const gate = $("gate");
    const input = $("gate-password");
    gate.hidden = false;
    gate.dataset.kind = kind;
    $("gate-login").hidden = true;
    input.closest(".share").hidden = about !== "password";
    if (about === "token") {
      $("gate-title").textContent = "Not authorised";
      $("gate-text").textContent =
        kind === "not_granted"
          ? "Your sign-in does not give you access to this document. Ask its owner for access."
          : `You need to sign in to open this document (${message.replace(/[.\s]+$/, "")}).`;
      if (loginUrl && kind !== "not_granted") {
        const target = `${loginUrl}${loginUrl.includes("?") ? "&" : "?"}return=${encodeURIComponent(location.href)}`;
        $("gate-login").href = target;
        $("gate-login").hidden = false;
        // Sent there once per tab; a second refusal stays here rather than loop.
        if (!tab?.getItem("codraft:login-sent")) {
          tab?.setItem("codraft:login-sent", "1");
          location.assign(target);
        }
      }
      return;
    }
    $("gate-title").textContent = "This document is protected";
    const texts = {
      password_required: "Enter its password to open it.",
      wrong_password: "That password is not right. Check it and try again.",
      too_many_guesses: "Too many wrong passwords for this document from your network. Wait a minute, then try again.",
    };
    $("gate-text").textContent = texts[kind] ?? "Enter its password to open it.";
    if (kind !== "password_required") tab?.removeItem(passwordKey);
    input.value = "";
    input.focus();
  }
  $("gate").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("gate-password").value;
    if (!typed) return;
    $("gate-text").textContent = "Checking…";
    session.usePassword(typed);
  });
  $("set-password").addEventListener("click", () => {
    const typed = $("password").value.trim();
    if (!typed) {
      $("password").focus();
      return;
    }
    if (changePassword(typed)) $("password").value = "";
  });
  $("remove-password").addEventListener("click", () => changePassword(null));
  /** Sets or removes the password; false (and a notice) when a Yjs document is not connected. */
  function changePassword(now) {
    if (session.setPassword(now) !== false) return true;
    banner.show("Not connected: the password was not changed. Try again once the page says Connected.", { kind: "warning", timeoutMs: 6000 });
    return false;
  }

  // ---- download ----
  $("download").addEventListener("click", () => {
    const ext = FILE_EXTENSIONS[select.value] ?? "txt";
    const name = ext === "Dockerfile" ? "Dockerfile" : `${docId}.${ext}`;
    const url = URL.createObjectURL(new Blob([editor.getText()], { type: "text/plain;charset=utf-8" }));
    const link = Object.assign(document.createElement("a"), { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });

  // ---- connection status ----
  let shown = { status: "connecting", attempt: 0, until: 0 };
  let ticker = null;
  function renderStatus(status, detail) {
    shown = { status, attempt: detail.attempt ?? 0, until: Date.now() + (detail.retryInMs ?? 0), stopped: !!detail.stopped };
    $("status").dataset.status = status;
    document.body.dataset.status = status;
    $("retry").hidden = status !== "disconnected" || shown.stopped;
    clearInterval(ticker);
    // While not connected, keep the countdown and the unsaved-change count current.
    if (status !== "connected") ticker = setInterval(paintStatus, 500);
    paintStatus();
  }
  function paintStatus() {
    const pending = session?.pendingChanges ?? 0;
    const unsaved = pending ? ` · ${plural(pending, "unsaved edit")}` : "";
    let text = "Connected";
    if (shown.status === "refused") text = $("gate-title").textContent === "Not authorised" ? "Not authorised" : "Password needed";
    if (shown.status === "connecting") text = `${shown.attempt ? "Reconnecting" : "Connecting"}…${unsaved}`;
    if (shown.status === "disconnected") {
      const s = Math.max(0, Math.ceil((shown.until - Date.now()) / 1000));
      text = shown.stopped ? "Disconnected" : `Disconnected${unsaved} · retrying in ${s}s`;
    }
    $("status-text").textContent = text;
  }
  $("retry").addEventListener("click", () => session.reconnectNow());
  window.addEventListener("online", () => session.reconnectNow());

  // ---- language ----
  const select = $("language");
  for (const [id, { label }] of LANGUAGES) select.append(new Option(label, id));
  select.value = "plaintext";
  function applyLanguage(id) {
    if (typeof id !== "string") return;
    if (![...select.options].some((o) => o.value === id)) select.append(new Option(id, id));
    select.value = id;
    editor.setLanguage(id);
  }
  // A Yjs document carries no language: the choice stays on this browser, per document.
  const languageKey = `codraft:language:${place.key}`;
  if (yjs) applyLanguage(local?.getItem(languageKey) ?? "plaintext");
  select.addEventListener("change", () => {
    editor.setLanguage(select.value);
    if (yjs) local?.setItem(languageKey, select.value);
    else session.setLanguage(select.value);
  });

  // ---- share link ----
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
  }
  $("copy").addEventListener("click", async () => {
    await copyText(shareUrl());
    $("copy").textContent = "Copied";
    setTimeout(() => ($("copy").textContent = "Copy"), 1500);
  });
  $("share").addEventListener("focus", (e) => e.target.select());

  // ---- name and colour ----
  const nameInput = $("name");
  const hueInput = $("hue");
  nameInput.value = me.name;
  hueInput.value = String(me.hue);
  const sendInfo = debounce(() => session.setInfo(me), 300);
  function identityChanged() {
    me = { name: tokenName ?? (nameInput.value.trim() || me.name), hue: Number(hueInput.value) };
    saveIdentity(me);
    renderUsers(session.users);
    sendInfo();
  }
  nameInput.addEventListener("input", identityChanged);
  nameInput.addEventListener("blur", () => (nameInput.value = tokenName ?? me.name));
  hueInput.addEventListener("input", identityChanged);

  // ---- users ----
  function userItem({ name, hue, color }, self) {
    const li = document.createElement("li");
    const dot = document.createElement("span");
    dot.className = "user-dot";
    // `color`: a Yjs user from another client, who gave a colour but no hue.
    dot.style.setProperty("--color", color ?? userColor(hue));
    const label = document.createElement("span");
    label.className = "user-name";
    label.textContent = name;
    li.append(dot, label);
    if (self) {
      const you = document.createElement("span");
      you.className = "user-you";
      you.textContent = "you";
      li.append(you);
    }
    return li;
  }
  function renderUsers(users) {
    $("my-swatch").style.setProperty("--color", userColor(me.hue));
    const others = [...users.values()].sort((a, b) => a.name.localeCompare(b.name));
    const self = { name: tokenName ?? me.name, hue: me.hue };
    $("users").replaceChildren(userItem(self, true), ...others.map((u) => userItem(u, false)));
    $("user-count").textContent = String(others.length + 1);
    // A Yjs document's carets are y-codemirror.next's, which redraws them itself.
    if (!yjs) editor.refreshCursors();
  }
  renderUsers(session.users);

  // ---- page lifecycle ----
  window.addEventListener("hashchange", () => location.reload());
  if (yjs) {
    // Leaving: tell the others now (y-websocket's provider does not on a page's unload);
    // a page restored from the back/forward cache comes back.
    window.addEventListener("pagehide", () => session.leave());
    window.addEventListener("pageshow", (event) => event.persisted && session.setInfo(me));
  }
  window.addEventListener("beforeunload", (event) => {
    if (session.pendingChanges > 0) event.preventDefault();
  });

  // Test and debugging hooks.
  window.codraftText = () => editor.getText();
  window.codraft = { session, editor, docId, clientId, kind: place.kind };

  session.start();
  editor.view.focus();
}

main().catch((err) => {
  console.error(err);
  document.body.dataset.status = "error";
});
