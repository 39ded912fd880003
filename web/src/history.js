// The history panel: the document's editing sessions (who, when, how much), a slider over
// its revisions that shows the text read-only as it was, with what the session that
// produced that revision added highlighted in its author's colour (or, with "Show authors",
// every character in the colour of whoever wrote it: a blame), and a Restore button
// that makes the document that text again by one new edit (docs/api.md).
//
// Everything comes from the HTTP API, with the page's password and token; the live editor
// is never touched here: a restore reaches it through the socket like anyone's edit.

import { selectionColor, userColor } from "./colors.js";

const $ = (id) => document.getElementById(id);

/** Code points of `text` from `start` to `end` (the API counts code points, not UTF-16). */
function slice(points, start, end) {
  return points.slice(start, end).join("");
}

function timeOf(ms) {
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Sets up the panel for `docId`; `credentials()` gives the current `{ password, token }`,
 * `notify(message, kind)` shows a banner. A Yjs document passes `restoreText(text)`: the
 * server has its history and text at any revision but no diff or restore (those are made of
 * OT operations), so the preview marks nothing and a restore is this page's own edit, which
 * makes the document's text the old one and reaches everyone like any update.
 */
export function createHistoryPanel({ docId, credentials, notify, restoreText = null }) {
  const panel = $("history");
  const list = $("history-sessions");
  const slider = $("history-slider");
  const label = $("history-revision");
  const preview = $("history-preview");
  const restoreButton = $("history-restore");
  const showAuthors = $("history-authors");
  const hasDiff = restoreText == null;
  showAuthors.closest("label").hidden = !hasDiff;
  let sessions = [];
  let exactFrom = 0;
  let shown = -1;
  let pending = null;

  function url(path, params = {}) {
    const { password, token } = credentials();
    const query = new URLSearchParams(params);
    if (password) query.set("otp", password);
    if (token) query.set("token", token);
    return `/api/documents/${encodeURIComponent(docId)}/${path}?${query}`;
  }

  async function getJson(path, params) {
    const res = await fetch(url(path, params));
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.message ?? `HTTP ${res.status}`);
    return body;
  }

  function renderSessions() {
    list.replaceChildren();
    for (const s of sessions) {
      const li = document.createElement("li");
      li.className = "history-session";
      li.dataset.last = String(s.last_revision);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = s.author.hue == null ? "var(--muted)" : userColor(s.author.hue);
      const who = document.createElement("span");
      who.className = "history-author";
      // Unnamed: a user who never gave a name, or (id 0 in a Yjs document) updates that
      // only deleted, which name no author.
      who.textContent = s.author.name ?? (s.author.id === 0 ? "Deletions" : `User ${s.author.id}`);
      const what = document.createElement("span");
      what.className = "history-meta";
      what.textContent = `${timeOf(s.started_ms)} · +${s.inserted} −${s.deleted} · rev ${s.first_revision}–${s.last_revision}`;
      li.append(swatch, who, what);
      li.addEventListener("click", () => {
        slider.value = String(s.last_revision);
        show(s.last_revision);
      });
      list.append(li);
    }
  }

  /** The session whose edits produced `revision`, if the page lists it. */
  function sessionOf(revision) {
    return sessions.find((s) => s.first_revision <= revision && revision <= s.last_revision);
  }

  async function show(revision) {
    shown = revision;
    label.textContent = `Revision ${revision} of ${slider.max}`;
    for (const li of list.children) li.classList.toggle("selected", sessionOf(revision)?.last_revision === Number(li.dataset.last));
    try {
      const at = await getJson("text", { revision });
      if (shown !== revision) return;
      const session = sessionOf(revision);
      const points = Array.from(at.text);
      preview.replaceChildren();
      // Highlight what the revision's session added, or everything since history is exact.
      const from = !hasDiff ? null : showAuthors.checked ? Math.min(exactFrom, revision) : session ? session.first_revision - 1 : null;
      if (from == null) {
        preview.textContent = at.text;
      } else {
        const diff = await getJson("diff", { from, to: revision });
        if (shown !== revision) return;
        const hues = new Map(diff.authors.map((a) => [a.id, a.hue]));
        let at0 = 0;
        for (const span of diff.spans) {
          const piece = slice(points, at0, at0 + span.length);
          at0 += span.length;
          if (span.author == null) {
            preview.append(document.createTextNode(piece));
          } else {
            const mark = document.createElement("mark");
            mark.style.background = selectionColor(hues.get(span.author) ?? 0);
            mark.dataset.author = String(span.author);
            mark.textContent = piece;
            preview.append(mark);
          }
        }
      }
      preview.dataset.revision = String(revision);
    } catch (error) {
      preview.textContent = "";
      preview.dataset.revision = "";
      notify(`Could not show revision ${revision}: ${error.message}`, "error");
    }
  }

  async function refresh() {
    try {
      const history = await getJson("history", { limit: 50 });
      sessions = history.sessions;
      exactFrom = history.exact_from;
      slider.min = String(history.exact_from);
      slider.max = String(history.revision);
      slider.value = String(history.revision);
      renderSessions();
      await show(history.revision);
    } catch (error) {
      sessions = [];
      renderSessions();
      label.textContent = "No history yet";
      preview.textContent = "";
      if (!/never edited/.test(error.message)) notify(`Could not load the history: ${error.message}`, "error");
    }
  }

  slider.addEventListener("input", () => {
    clearTimeout(pending);
    const revision = Number(slider.value);
    pending = setTimeout(() => show(revision), 80);
  });

  showAuthors.addEventListener("change", () => {
    if (shown >= 0) show(shown);
  });

  restoreButton.addEventListener("click", async () => {
    const revision = shown;
    if (revision < 0) return;
    restoreButton.disabled = true;
    if (restoreText) {
      try {
        const at = await getJson("text", { revision });
        restoreText(at.text);
        notify(`Restored revision ${revision}: everyone now sees that version.`, "info");
        setTimeout(refresh, 500);
      } catch (error) {
        notify(`Could not restore revision ${revision}: ${error.message}`, "error");
      } finally {
        restoreButton.disabled = false;
      }
      return;
    }
    try {
      const { password, token } = credentials();
      const query = new URLSearchParams();
      if (password) query.set("otp", password);
      if (token) query.set("token", token);
      const res = await fetch(`/api/documents/${encodeURIComponent(docId)}/restore?${query}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ revision, key: randomKey() }),
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.message ?? `HTTP ${res.status}`);
      notify(`Restored revision ${revision}: everyone now sees that version (restore revision ${body.revision}).`, "info");
      await refresh();
    } catch (error) {
      notify(`Could not restore revision ${revision}: ${error.message}`, "error");
    } finally {
      restoreButton.disabled = false;
    }
  });

  function setOpen(open) {
    panel.hidden = !open;
    $("history-toggle").setAttribute("aria-expanded", String(open));
    if (open) refresh();
  }
  $("history-toggle").addEventListener("click", () => setOpen(panel.hidden));
  $("history-close").addEventListener("click", () => setOpen(false));
  return { refresh, setOpen };
}
