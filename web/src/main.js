// The page: picks the document from the URL hash, sets up the editor and the session, and
// keeps the sidebar (language, share link, name and colour, users) and the connection
// status in step with them. Entry point of the esbuild bundle (dist/app.js).

import "./app.css";
import { createEditor } from "./editor.js";
import { LANGUAGES } from "./languages.js";
import { Session } from "./session.js";
import { userColor } from "./colors.js";

const DOC_ID = /^[A-Za-z0-9._-]{1,256}$/;
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

/** The document id from `#id`; a bare URL gets a fresh random document. */
function documentId() {
  let id = "";
  try {
    id = decodeURIComponent(location.hash.slice(1));
  } catch {
    id = "";
  }
  if (!DOC_ID.test(id)) {
    id = randomId(10);
    history.replaceState(null, "", `#${id}`);
  }
  return id;
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
  const docId = documentId();
  const clientId = await claimClientId();
  let me = loadIdentity();
  const banner = createBanner();

  document.title = `${docId} · codraft`;
  $("doc-id").textContent = docId;
  const shareUrl = `${location.origin}${location.pathname}#${docId}`;
  $("share").value = shareUrl;

  // ---- editor and session ----
  /** @type {Session} */
  let session = null;
  const editor = createEditor($("editor"), {
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

  const socketUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/socket/${encodeURIComponent(docId)}`;
  session = new Session({
    socketUrl,
    clientId,
    editor,
    on: {
      status: renderStatus,
      users: renderUsers,
      cursors: () => editor.refreshCursors(),
      language: applyLanguage,
      synced: () => {
        editor.setReadOnly(false);
        if (!banner.sticky) banner.hide();
      },
      error: ({ code, message }) => {
        // 4400 leaves the connection open; every other code (and our own, 0) reconnects.
        const closing = code !== 4400;
        const text = String(message ?? "").replace(/[.\s]+$/, "") || "Connection error";
        const suffix = code ? ` (error ${code})` : "";
        banner.show(closing ? `${text}. Reconnecting…${suffix}` : `${text}.${suffix}`, {
          kind: "error",
          timeoutMs: closing ? 0 : 8000,
        });
      },
      lost: ({ count, text }) => {
        banner.show(
          `Reconnected, but ${plural(count, "unsaved change")} could not be merged: the server no longer ` +
            "had the history to place them. The editor now shows the document as saved on the server.",
          {
            kind: "error",
            keep: true,
            actionLabel: "Copy my version",
            onAction: () => copyText(text).then(() => banner.show("Your version was copied to the clipboard.", { kind: "info", timeoutMs: 4000 })),
          },
        );
      },
    },
  });
  session.setInfo(me);

  // ---- connection status ----
  let shown = { status: "connecting", attempt: 0, until: 0 };
  let ticker = null;
  function renderStatus(status, detail) {
    shown = { status, attempt: detail.attempt ?? 0, until: Date.now() + (detail.retryInMs ?? 0) };
    $("status").dataset.status = status;
    document.body.dataset.status = status;
    $("retry").hidden = status !== "disconnected";
    clearInterval(ticker);
    // While not connected, keep the countdown and the unsaved-change count current.
    if (status !== "connected") ticker = setInterval(paintStatus, 500);
    paintStatus();
  }
  function paintStatus() {
    const pending = session?.pendingChanges ?? 0;
    const unsaved = pending ? ` · ${plural(pending, "unsaved change")}` : "";
    let text = "Connected";
    if (shown.status === "connecting") text = `${shown.attempt ? "Reconnecting" : "Connecting"}…${unsaved}`;
    if (shown.status === "disconnected") {
      const s = Math.max(0, Math.ceil((shown.until - Date.now()) / 1000));
      text = `Disconnected${unsaved} · retrying in ${s}s`;
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
  select.addEventListener("change", () => {
    editor.setLanguage(select.value);
    session.setLanguage(select.value);
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
    await copyText(shareUrl);
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
    me = { name: nameInput.value.trim() || me.name, hue: Number(hueInput.value) };
    saveIdentity(me);
    renderUsers(session.users);
    sendInfo();
  }
  nameInput.addEventListener("input", identityChanged);
  nameInput.addEventListener("blur", () => (nameInput.value = me.name));
  hueInput.addEventListener("input", identityChanged);

  // ---- users ----
  function userItem({ name, hue }, self) {
    const li = document.createElement("li");
    const dot = document.createElement("span");
    dot.className = "user-dot";
    dot.style.setProperty("--color", userColor(hue));
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
    $("users").replaceChildren(userItem(me, true), ...others.map((u) => userItem(u, false)));
    $("user-count").textContent = String(others.length + 1);
    editor.refreshCursors();
  }
  renderUsers(session.users);

  // ---- page lifecycle ----
  window.addEventListener("hashchange", () => location.reload());
  window.addEventListener("beforeunload", (event) => {
    if (session.pendingChanges > 0) event.preventDefault();
  });

  // Test and debugging hooks.
  window.codraftText = () => editor.getText();
  window.codraft = { session, editor, docId, clientId };

  session.start();
  editor.view.focus();
}

main().catch((err) => {
  console.error(err);
  document.body.dataset.status = "error";
});
