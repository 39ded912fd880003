// End-to-end test of the web client's Yjs documents (`/#y:<room>`) in headless Chromium
// against a running server:
//
// - two pages on one fresh room type at the same time in different places; both editors end
//   up with the same text as the server's (GET /api/text/y:<room>) holding each page's
//   typing exactly once, a third page opened
//   afterwards loads that text from the server, page A shows page B's remote caret
//   (y-codemirror.next's `.cm-ySelectionCaret`) labelled with B's name and lists B among the
//   users;
// - the version history of a Yjs document: the sessions name the typist (from awareness),
//   the slider shows an older revision's text, and "Restore this version" makes everyone's
//   text (and the server's) that text, after which typing goes on as usual;
// - a password set with the sidebar control protects the room: a new page is asked for it,
//   a wrong one is refused, the right one opens it;
// - with JWT_BASE_URL (a server with JWT_SECRET): a reader's token gives a read-only editor
//   with the Read-only badge, and an update the reader sends anyway never reaches the writer.
//
// Leaves yjs-two-pages.png (both pages side by side) in ARTIFACT_DIR.
//
//   BASE_URL=http://127.0.0.1:3030 [JWT_BASE_URL=http://127.0.0.1:3031 JWT_SECRET=browser-secret] \
//     ARTIFACT_DIR=test-artifacts node web/tests/yjs.browser.mjs
//
// Needs Debian's chromium at /usr/bin/chromium (playwright cannot download browsers here).

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE_URL = (process.env.BASE_URL ?? "http://127.0.0.1:3030").replace(/\/+$/, "");
const JWT_BASE_URL = process.env.JWT_BASE_URL?.replace(/\/+$/, "") ?? null;
const JWT_SECRET = process.env.JWT_SECRET ?? "browser-secret";
const ARTIFACT_DIR = path.resolve(process.env.ARTIFACT_DIR ?? "test-artifacts");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const OVERALL_TIMEOUT_MS = 150_000;

const TEXT_A = "héllo 🎉 from Alice";
const TEXT_B = "grüße 🚀 from Bob";

const randomRoom = (prefix) => `${prefix}${Math.random().toString(36).slice(2, 10)}`;

/** Polls `check` (async, returns truthy when done) every 100 ms until `ms` elapse. */
async function waitFor(what, check, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function assert(ok, message) {
  if (!ok) throw new Error(message);
}

function occurrences(haystack, needle) {
  return haystack.split(needle).length - 1;
}

/** An HS256 JWT for the JWT server. */
function jwt(claims) {
  const part = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
  return `${body}.${crypto.createHmac("sha256", JWT_SECRET).update(body).digest("base64url")}`;
}

function step(name) {
  console.log(`  - ${name}`);
}

/** A page in its own browser context (its own storage), with its console collected. */
async function newPage(browser, logs, name) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 720 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") logs.push(`[${name}] ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => logs.push(`[${name}] page error: ${e.message}`));
  return page;
}

const text = (page) => page.evaluate(() => window.codraftText());
/** The room's committed text, from GET /api/text/y:<room>. */
const serverText = async (room, base = BASE_URL, query = "") => (await fetch(`${base}/api/text/y:${room}${query}`)).text();
const connected = (page) => page.waitForSelector('#status[data-status="connected"]', { timeout: 20_000 });

async function openRoom(browser, logs, room, name, base = BASE_URL) {
  const page = await newPage(browser, logs, name);
  await page.goto(`${base}/#y:${room}`);
  await connected(page);
  await page.fill("#name", name);
  return page;
}

async function twoPages(browser, logs) {
  const room = randomRoom("yt");
  const a = await openRoom(browser, logs, room, "Alice");
  const b = await openRoom(browser, logs, room, "Bob");
  assert((await a.evaluate(() => window.codraft.kind)) === "yjs", "the page did not open a Yjs document");
  assert(await a.isVisible("#kind-badge"), "the Yjs badge is not shown");
  assert(await a.isVisible("#history-toggle"), "the version history is not offered for a Yjs document");
  step("#y:<room> opens a Yjs document");

  // A writes two lines; once B has them, A types at the start and B at the end, together.
  await a.click(".cm-content");
  await a.keyboard.type("first line\nsecond line", { delay: 5 });
  await waitFor("page B to receive page A's lines", async () => (await text(b)) === "first line\nsecond line", 10_000);
  await a.keyboard.press("Control+Home");
  await b.click(".cm-content");
  await b.keyboard.press("Control+End");
  await b.keyboard.press("Enter");
  await Promise.all([a.keyboard.type(`${TEXT_A}\n`, { delay: 15 }), b.keyboard.type(TEXT_B, { delay: 15 })]);

  const final = await waitFor(
    "both editors and the server to agree",
    async () => {
      const [ta, tb, ts] = [await text(a), await text(b), await serverText(room)];
      return ta === tb && tb === ts && ta.includes(TEXT_A) && ta.includes(TEXT_B) ? ta : null;
    },
    15_000,
  ).catch(async (err) => {
    throw new Error(
      `${err.message}\n  A:      ${JSON.stringify(await text(a))}\n  B:      ${JSON.stringify(await text(b))}\n  server: ${JSON.stringify(await serverText(room))}`,
    );
  });
  for (const typed of [TEXT_A, TEXT_B, "first line", "second line"]) {
    const n = occurrences(final, typed);
    assert(n === 1, `${JSON.stringify(typed)} appears ${n} times in ${JSON.stringify(final)}`);
  }
  assert(final.startsWith(TEXT_A), `page A typed at the start, but the text is ${JSON.stringify(final)}`);
  assert(final.endsWith(TEXT_B), `page B typed at the end, but the text is ${JSON.stringify(final)}`);
  step("two pages typing at once converge with the server's text, each one's typing present once");

  // B's caret, labelled with B's name, shows on A's page, on the last line where B typed.
  const caret = a.locator(".cm-ySelectionCaret", { has: a.locator(".cm-ySelectionInfo", { hasText: "Bob" }) });
  await caret.first().waitFor({ state: "attached", timeout: 10_000 });
  await a.locator(".cm-line", { hasText: TEXT_B }).locator(".cm-ySelectionCaret").first().waitFor({ state: "attached", timeout: 10_000 });
  await a.locator("#users", { hasText: "Bob" }).waitFor({ timeout: 10_000 });
  assert((await a.textContent("#user-count")) === "2", `page A counts ${await a.textContent("#user-count")} users`);
  step("page A shows page B's caret with B's name where B typed, and B in the user list");

  // Select a word on B so the screenshot shows a remote selection too.
  await b.keyboard.press("Shift+Control+ArrowLeft");
  await a.waitForSelector(".cm-ySelection", { timeout: 10_000 });

  // A third page loads the text from the server.
  const c = await openRoom(browser, logs, room, "Carol");
  await waitFor("page C to load the room's text", async () => (await text(c)) === final, 10_000);
  await a.locator("#users", { hasText: "Carol" }).waitFor({ timeout: 10_000 });
  await c.context().close();
  await a.locator("#users", { hasText: "Carol" }).waitFor({ state: "detached", timeout: 35_000 });
  step("a page opened later loads the same text; it joins and leaves A's user list");

  // Dark mode applies to the Yjs editor too.
  await a.click("#theme-toggle");
  const theme = await a.evaluate(() => document.documentElement.dataset.theme);
  await a.click("#theme-toggle");
  assert((await a.evaluate(() => document.documentElement.dataset.theme)) !== theme, "the theme toggle does nothing");

  const shots = [await a.screenshot(), await b.screenshot()].map((png) => `data:image/png;base64,${png.toString("base64")}`);
  const sheet = await browser.newPage({ viewport: { width: 1920, height: 600 } });
  await sheet.setContent(
    `<body style="margin:0;display:flex;gap:8px;background:#8c959f">${shots
      .map((src) => `<img src="${src}" style="width:956px;display:block">`)
      .join("")}</body>`,
  );
  await sheet.waitForFunction(() => [...document.images].every((img) => img.complete));
  fs.mkdirSync(ARTIFACT_DIR, { recursive: true });
  await sheet.screenshot({ path: path.join(ARTIFACT_DIR, "yjs-two-pages.png") });
  await Promise.all([a.context().close(), b.context().close(), sheet.close()]);
}

async function versionHistory(browser, logs) {
  const room = randomRoom("yh");
  const a = await openRoom(browser, logs, room, "Alice");
  const b = await openRoom(browser, logs, room, "Bob");
  await a.click(".cm-content");
  await a.keyboard.type("alpha ✓", { delay: 10 });
  await waitFor("the first word to be saved", async () => (await serverText(room)) === "alpha ✓", 10_000);
  await a.keyboard.type(" beta", { delay: 10 });
  await waitFor("page B to have both words", async () => (await text(b)) === "alpha ✓ beta", 10_000);
  await waitFor("the second word to be saved", async () => (await serverText(room)) === "alpha ✓ beta", 10_000);

  // The revision whose text is the first word, found through the API the panel uses.
  const api = (path) => fetch(`${BASE_URL}/api/documents/y:${room}/${path}`).then((r) => r.json());
  const history = await api("history");
  let target = null;
  for (let r = history.revision; r >= 0 && target == null; r--) {
    if ((await api(`text?revision=${r}`)).text === "alpha ✓") target = r;
  }
  assert(target != null, `no revision of ${JSON.stringify(history)} has the first word alone`);

  await a.click("#history-toggle");
  await a.locator("#history-sessions li", { hasText: "Alice" }).first().waitFor({ timeout: 10_000 });
  await waitFor("the preview of the newest revision", () => a.evaluate(() => document.getElementById("history-preview").textContent === "alpha ✓ beta"), 10_000);
  assert(await a.isHidden("#history-authors"), "authorship marks are offered for a Yjs document (it has no diff)");
  await a.evaluate((value) => {
    const slider = document.getElementById("history-slider");
    slider.value = String(value);
    slider.dispatchEvent(new Event("input", { bubbles: true }));
  }, target);
  await waitFor(
    `the preview of revision ${target}`,
    () => a.evaluate((t) => {
      const preview = document.getElementById("history-preview");
      return preview.dataset.revision === String(t) && preview.textContent === "alpha ✓";
    }, target),
    10_000,
  );
  assert((await text(a)) === "alpha ✓ beta", "moving the slider changed the live editor");
  step("the history lists Alice's session and shows an older revision's text");

  await a.click("#history-restore");
  await waitFor(
    "both pages and the server to have the restored text",
    async () => (await text(a)) === "alpha ✓" && (await text(b)) === "alpha ✓" && (await serverText(room)) === "alpha ✓",
    10_000,
  );
  await b.click(".cm-content");
  await b.keyboard.press("Control+End");
  await b.keyboard.type("!", { delay: 10 });
  await waitFor("typing after the restore to reach everyone", async () => (await text(a)) === "alpha ✓!" && (await serverText(room)) === "alpha ✓!", 10_000);
  step("a restore makes everyone's text the old one; typing goes on after it");
  await Promise.all([a.context().close(), b.context().close()]);
}

async function password(browser, logs) {
  const room = randomRoom("yp");
  const owner = await openRoom(browser, logs, room, "Owner");
  await owner.click(".cm-content");
  await owner.keyboard.type("the secret plan", { delay: 5 });
  await owner.fill("#password", "open sesame");
  await owner.click("#set-password");
  await owner.locator("#password-state", { hasText: "open sesame" }).waitFor({ timeout: 10_000 });
  step("Set password on a Yjs document sends it and shows it to the owner");

  const guest = await newPage(browser, logs, "guest");
  await guest.goto(`${BASE_URL}/#y:${room}`);
  await guest.locator("#gate", { hasText: "This document is protected" }).waitFor({ state: "visible", timeout: 20_000 });
  await guest.locator("#status", { hasText: "Password needed" }).waitFor({ timeout: 5000 });
  await guest.fill("#gate-password", "open sesame?");
  await guest.click("#gate-open");
  await guest.locator("#gate-text", { hasText: "not right" }).waitFor({ timeout: 20_000 });
  await guest.fill("#gate-password", "open sesame");
  await guest.click("#gate-open");
  await connected(guest);
  await waitFor("the guest to see the text", async () => (await text(guest)) === "the secret plan", 10_000);
  assert(await guest.isHidden("#gate"), "the password prompt stays after the right password");
  step("a new page is asked for the password, refused a wrong one, opened with the right one");
  await Promise.all([owner.context().close(), guest.context().close()]);
}

async function reader(browser, logs) {
  const room = randomRoom("yr");
  const writer = await newPage(browser, logs, "writer");
  await writer.goto(`${JWT_BASE_URL}/#y:${room}&token=${jwt({ name: "Ada Writer", write: ["*"] })}`);
  await connected(writer);
  await writer.click(".cm-content");
  await writer.keyboard.type("written by Ada", { delay: 5 });

  const readerPage = await newPage(browser, logs, "reader");
  const readToken = jwt({ name: "Bob Reader", read: ["*"] });
  await readerPage.addInitScript((t) => localStorage.setItem("codraft:token", t), readToken);
  await readerPage.goto(`${JWT_BASE_URL}/#y:${room}`);
  await connected(readerPage);
  await readerPage.locator("#readonly-badge", { hasText: "Read-only" }).waitFor({ state: "visible", timeout: 10_000 });
  await waitFor("the reader to see the text", async () => (await text(readerPage)) === "written by Ada", 10_000);
  await readerPage.click(".cm-content");
  await readerPage.keyboard.type("vandal", { delay: 5 });
  assert((await text(readerPage)) === "written by Ada", "a reader's editor took typing");
  assert((await readerPage.inputValue("#name")) === "Bob Reader", "the reader's name is not its token's");
  await writer.locator("#users", { hasText: "Bob Reader" }).waitFor({ timeout: 10_000 });
  step("a reader's token gives a read-only editor with the badge and the token's name");

  // An update the reader's page sends anyway is dropped by the server. The reader then says
  // so in awareness on the same socket; once the writer has that, it would have the update.
  await readerPage.evaluate(() => {
    const s = window.codraft.session;
    s.text.insert(0, "sneaky ");
    s.awareness.setLocalStateField("probe", "sent");
  });
  await waitFor(
    "the reader's probe to reach the writer",
    () => writer.evaluate(() => [...window.codraft.session.awareness.getStates().values()].some((s) => s.probe === "sent")),
    10_000,
  );
  assert((await text(writer)) === "written by Ada", `the reader's update reached the writer: ${JSON.stringify(await text(writer))}`);
  const stored = await serverText(room, JWT_BASE_URL, `?token=${readToken}`);
  assert(stored === "written by Ada", `the server's text is ${JSON.stringify(stored)}`);
  step("the server drops a reader's update");
  await Promise.all([writer.context().close(), readerPage.context().close()]);
}

async function run() {
  const logs = [];
  const results = [];
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const scenarios = [
    ["two pages", twoPages],
    ["version history", versionHistory],
    ["password", password],
  ];
  if (JWT_BASE_URL) scenarios.push(["reader", reader]);
  else console.log("  (JWT_BASE_URL not set: the reader scenario is skipped)");
  try {
    for (const [name, scenario] of scenarios) {
      console.log(`${name}:`);
      const seen = logs.length;
      try {
        await scenario(browser, logs);
        results.push({ name, ok: true });
      } catch (err) {
        results.push({ name, ok: false, err, logs: logs.slice(seen) });
      }
    }
  } finally {
    await browser.close().catch(() => {});
  }
  return results;
}

const timeout = new Promise((resolve) =>
  setTimeout(() => resolve([{ name: "all", ok: false, err: new Error(`no result within ${OVERALL_TIMEOUT_MS} ms`), logs: [] }]), OVERALL_TIMEOUT_MS).unref(),
);
let results;
try {
  results = await Promise.race([run(), timeout]);
} catch (err) {
  results = [{ name: "all", ok: false, err, logs: [] }];
}
const failed = results.filter((r) => !r.ok);
for (const r of failed) {
  console.error(`yjs browser scenario "${r.name}" failed: ${r.err?.stack ?? r.err}`);
  for (const line of r.logs) console.error(line);
}
if (!failed.length) console.log(`screenshot in ${path.join(ARTIFACT_DIR, "yjs-two-pages.png")}`);
console.log(`yjs: ${results.length - failed.length} passed, ${failed.length} failed`);
process.exit(failed.length ? 1 : 0);
