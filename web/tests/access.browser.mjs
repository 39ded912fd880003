// End-to-end tests of passwords, tokens and the page around the editor, in headless
// Chromium against running servers:
//
// - a password set with the sidebar control protects the document: a new page asks for it,
//   a wrong one is refused without a retry loop (and other documents still open from the
//   same address), the right one opens it, `#doc&otp=` opens it directly, and a page already
//   inside is shown the new password;
// - with JWT on (JWT_BASE_URL, a server started with JWT_SECRET=browser-secret): a reader
//   sees "Read-only", cannot change the text and never shows "Reconnecting…"; its own
//   sidebar shows the name from its token; a page without a token says "Not authorised";
// - a language set by a plain protocol client ("shell") highlights; Download saves the
//   text; a new document shows a hint; dark mode follows the system and the toggle, and is
//   remembered; on a 390×844 phone the editor starts near the top and lines wrap.
//
// Screenshots go to ARTIFACT_DIR: password-prompt.png, password-wrong.png, read-only.png,
// dark-mode.png, phone.png, phone-sidebar.png.
//
//   BASE_URL=http://127.0.0.1:3030 JWT_BASE_URL=http://127.0.0.1:3031 \
//     ARTIFACT_DIR=test-artifacts node web/tests/access.browser.mjs

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import WebSocket from "ws";

const BASE_URL = (process.env.BASE_URL ?? "http://127.0.0.1:3030").replace(/\/+$/, "");
const JWT_BASE_URL = process.env.JWT_BASE_URL?.replace(/\/+$/, "") ?? null;
const JWT_SECRET = process.env.JWT_SECRET ?? "browser-secret";
const ARTIFACT_DIR = path.resolve(process.env.ARTIFACT_DIR ?? "test-artifacts");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const OVERALL_TIMEOUT_MS = 180_000;

const randomId = (prefix) => `${prefix}${Math.random().toString(36).slice(2, 10)}`;

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

/** An HS256 JWT for the JWT server. */
function jwt(claims) {
  const part = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
  return `${body}.${crypto.createHmac("sha256", JWT_SECRET).update(body).digest("base64url")}`;
}

/** A plain protocol client (no client id), as a Rustpad client connects; resolves once joined. */
function plainClient(base, docId, query = "") {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, "ws")}/api/socket/${docId}${query}`);
    const timer = setTimeout(() => reject(new Error("plain client did not join")), 10_000);
    ws.on("message", (data) => {
      if (JSON.parse(String(data)).History) {
        clearTimeout(timer);
        resolve(ws);
      }
    });
    ws.on("error", reject);
  });
}

const steps = [];
function step(name) {
  steps.push(name);
  console.log(`  - ${name}`);
}

async function newPage(browser, logs, name, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 720 }, acceptDownloads: true, ...options });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") logs.push(`[${name}] ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => logs.push(`[${name}] page error: ${e.message}`));
  return page;
}

const text = (page) => page.evaluate(() => window.codraftText());
const connected = (page) => page.waitForSelector('#status[data-status="connected"]', { timeout: 20_000 });

async function passwords(browser, logs) {
  const docId = randomId("pw");
  const owner = await newPage(browser, logs, "owner");
  await owner.goto(`${BASE_URL}/#${docId}`);
  await connected(owner);
  // A new document shows a hint instead of a blank page.
  await owner.locator(".cm-placeholder", { hasText: "This document is empty" }).waitFor({ timeout: 5000 });
  step("a new document shows the empty-state hint");
  await owner.click(".cm-content");
  await owner.keyboard.type("the secret plan", { delay: 5 });
  await waitFor("the owner's edit to be saved", () => owner.evaluate(() => window.codraft.session.pendingChanges === 0), 10_000);
  await owner.fill("#password", "open sesame");
  await owner.click("#set-password");
  await owner.locator("#password-state", { hasText: "open sesame" }).waitFor({ timeout: 10_000 });
  await owner.locator("#banner", { hasText: "Its password is “open sesame”" }).waitFor({ timeout: 10_000 });
  assert(!(await owner.isHidden("#remove-password")), "Remove password is not offered on a protected document");
  step("Set password protects the document and shows the password to those inside");

  // The text API is closed to those without the password.
  const res = await fetch(`${BASE_URL}/api/text/${docId}`);
  assert(res.status === 401, `the text API answered ${res.status} without the password`);

  // A newcomer is asked; a wrong password is refused once, with no retry loop.
  const guest = await newPage(browser, logs, "guest");
  let sockets = 0;
  guest.on("websocket", () => sockets++);
  await guest.goto(`${BASE_URL}/#${docId}`);
  await guest.locator("#gate-text", { hasText: "Enter its password" }).waitFor({ timeout: 10_000 });
  assert((await guest.textContent("#status-text")) === "Password needed", "the status does not say a password is needed");
  fs.mkdirSync(ARTIFACT_DIR, { recursive: true });
  await guest.screenshot({ path: path.join(ARTIFACT_DIR, "password-prompt.png") });
  assert((await text(guest)) === "", "the page shows text before the password");
  step("a protected document asks for its password");

  await guest.fill("#gate-password", "wrong guess");
  const before = sockets;
  await guest.click("#gate-open");
  await guest.locator("#gate-text", { hasText: "not right" }).waitFor({ timeout: 10_000 });
  await new Promise((r) => setTimeout(r, 3000));
  assert(sockets === before + 1, `a wrong password led to ${sockets - before} connections in 3 s, not 1`);
  await guest.screenshot({ path: path.join(ARTIFACT_DIR, "password-wrong.png") });
  step("a wrong password is refused with one attempt and no retry loop");

  // Other documents still open from the same address.
  const other = await newPage(browser, logs, "other");
  await other.goto(`${BASE_URL}/#${randomId("free")}`);
  await connected(other);
  step("other documents still open from the same address");

  await guest.fill("#gate-password", "open sesame");
  await guest.click("#gate-open");
  await connected(guest);
  await waitFor("the guest to see the text", async () => (await text(guest)) === "the secret plan", 10_000);
  assert(await guest.isHidden("#gate"), "the password prompt stays after opening");
  step("the right password opens it");

  // The link with the password in it opens the document directly; the address bar drops it.
  const linked = await newPage(browser, logs, "linked");
  await linked.goto(`${BASE_URL}/#${docId}&otp=${encodeURIComponent("open sesame")}`);
  await connected(linked);
  assert(!linked.url().includes("otp="), `the password stays in the address bar: ${linked.url()}`);
  assert((await linked.inputValue("#share")).includes("otp="), "the share link of a protected document lacks its password");
  step("#doc&otp= opens it directly and is taken off the address bar");

  // Removing the password: those inside are told.
  await owner.click("#remove-password");
  await guest.locator("#banner", { hasText: "password was removed" }).waitFor({ timeout: 10_000 });
  step("Remove password reaches the others");
}

async function readers(browser, logs) {
  const docId = randomId("ro");
  const writer = await newPage(browser, logs, "writer");
  await writer.goto(`${JWT_BASE_URL}/#${docId}&token=${jwt({ name: "Ada Writer", write: ["*"] })}`);
  await connected(writer);
  assert(!writer.url().includes("token="), "the token stays in the address bar");
  await writer.click(".cm-content");
  await writer.keyboard.type("written by Ada", { delay: 5 });

  const reader = await newPage(browser, logs, "reader");
  const statuses = [];
  await reader.exposeFunction("recordStatus", (s) => statuses.push(s));
  await reader.addInitScript(() => {
    new MutationObserver(() => {
      const el = document.getElementById("status-text");
      if (el) window.recordStatus(el.textContent);
    }).observe(document, { subtree: true, childList: true, characterData: true });
  });
  // The token handed over in localStorage, the other documented way.
  const readToken = jwt({ name: "Bob Reader", read: ["*"] });
  // Put there before the page's own script runs, so the page opens once, with it (a second
  // navigation that changes only the hash reloads the page and raced the first connection).
  await reader.addInitScript((t) => localStorage.setItem("codraft:token", t), readToken);
  await reader.goto(`${JWT_BASE_URL}/#${docId}`);
  await connected(reader);
  await reader.locator("#readonly-badge", { hasText: "Read-only" }).waitFor({ state: "visible", timeout: 10_000 });
  await waitFor("the reader to see the text", async () => (await text(reader)) === "written by Ada", 10_000);
  await reader.click(".cm-content");
  await reader.keyboard.type("reader was here", { delay: 5 });
  await new Promise((r) => setTimeout(r, 1500));
  assert((await text(reader)) === "written by Ada", `the reader changed its text: ${JSON.stringify(await text(reader))}`);
  assert((await text(writer)) === "written by Ada", "the reader's typing reached the writer");
  assert(!statuses.some((s) => /Reconnecting|Disconnected/.test(s)), `the reader showed ${JSON.stringify(statuses)}`);
  const mine = await reader.textContent("#users li:first-child");
  assert(mine.includes("Bob Reader"), `the reader's own entry shows ${JSON.stringify(mine)}, not its token's name`);
  await reader.screenshot({ path: path.join(ARTIFACT_DIR, "read-only.png") });
  step("a reader sees Read-only, cannot change the text, has its token's name and never reconnects");

  const stranger = await newPage(browser, logs, "stranger");
  await stranger.goto(`${JWT_BASE_URL}/#${docId}`);
  await stranger.locator("#gate-title", { hasText: "Not authorised" }).waitFor({ timeout: 10_000 });
  step("a page without a token says Not authorised");
}

async function pageFeatures(browser, logs) {
  // A language set by a plain client highlights here.
  const docId = randomId("lang");
  const plain = await plainClient(BASE_URL, docId);
  plain.send(JSON.stringify({ Edit: { revision: 1, operation: ["echo \"$HOME\" # where I live\n"] } }));
  plain.send(JSON.stringify({ SetLanguage: "shell" }));
  const page = await newPage(browser, logs, "lang");
  await page.goto(`${BASE_URL}/#${docId}`);
  await connected(page);
  await waitFor("the page to switch to shell", () => page.evaluate(() => document.getElementById("language").value === "shell"), 10_000);
  const label = await page.evaluate(() => document.getElementById("language").selectedOptions[0].textContent);
  assert(label === "Shell", `the language shows as ${JSON.stringify(label)}`);
  await waitFor("the shell text to be highlighted", () => page.evaluate(() => document.querySelectorAll(".cm-content .cm-line span[class]").length >= 2), 10_000);
  const count = await page.evaluate(() => document.getElementById("language").options.length);
  assert(count >= 75, `only ${count} languages`);
  step(`a language set by a plain client ("shell") highlights; ${count} languages offered`);
  plain.close();

  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
  assert(download.suggestedFilename() === `${docId}.sh`, `download named ${download.suggestedFilename()}`);
  const saved = fs.readFileSync(await download.path(), "utf8");
  assert(saved === "echo \"$HOME\" # where I live\n", `download holds ${JSON.stringify(saved)}`);
  step("Download saves the text with the language's extension");

  // Dark mode follows the system, the toggle overrides it, and the choice is remembered.
  const dark = await newPage(browser, logs, "dark", { colorScheme: "dark" });
  await dark.goto(`${BASE_URL}/#${docId}`);
  await connected(dark);
  assert((await dark.evaluate(() => document.documentElement.dataset.theme)) === "dark", "dark system, light page");
  await dark.screenshot({ path: path.join(ARTIFACT_DIR, "dark-mode.png") });
  await dark.click("#theme-toggle");
  await dark.reload();
  await connected(dark);
  assert((await dark.evaluate(() => document.documentElement.dataset.theme)) === "light", "the toggle was not remembered");
  step("dark mode follows the system; the toggle is remembered");

  // A phone: the editor starts near the top, lines wrap, the sidebar opens over it.
  const phone = await newPage(browser, logs, "phone", { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const long = randomId("phone");
  const writer = await plainClient(BASE_URL, long);
  writer.send(JSON.stringify({ Edit: { revision: 1, operation: [`${"a long line that must wrap on a phone ".repeat(4)}\nsecond line`] } }));
  await phone.goto(`${BASE_URL}/#${long}`);
  await connected(phone);
  await waitFor("the phone to get the text", async () => (await text(phone)).includes("second line"), 10_000);
  const top = await phone.evaluate(() => document.querySelector(".cm-editor").getBoundingClientRect().top);
  assert(top < 80, `the editor starts ${top} px down on a phone`);
  const scrolls = await phone.evaluate(() => {
    const s = document.querySelector(".cm-scroller");
    return s.scrollWidth > s.clientWidth + 1;
  });
  assert(!scrolls, "long lines scroll sideways on a phone instead of wrapping");
  await phone.screenshot({ path: path.join(ARTIFACT_DIR, "phone.png") });
  await phone.click("#sidebar-toggle");
  await phone.locator("#sidebar").waitFor({ state: "visible", timeout: 5000 });
  await phone.screenshot({ path: path.join(ARTIFACT_DIR, "phone-sidebar.png") });
  writer.close();
  step(`on a 390×844 phone the editor starts ${Math.round(top)} px down, lines wrap, the sidebar folds away`);
}

async function run() {
  const logs = [];
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    await passwords(browser, logs);
    if (JWT_BASE_URL) await readers(browser, logs);
    else console.log("  (JWT_BASE_URL not set: reader scenarios skipped)");
    await pageFeatures(browser, logs);
    return { ok: true, logs };
  } catch (err) {
    return { ok: false, err, logs };
  } finally {
    await browser.close().catch(() => {});
  }
}

const timeout = new Promise((resolve) =>
  setTimeout(() => resolve({ ok: false, err: new Error(`no result within ${OVERALL_TIMEOUT_MS} ms`), logs: [] }), OVERALL_TIMEOUT_MS).unref(),
);
const result = await Promise.race([run(), timeout]).catch((err) => ({ ok: false, err, logs: [] }));
if (result.ok) {
  console.log(`browser (access and page): ${steps.length} steps passed; screenshots in ${ARTIFACT_DIR}`);
  process.exit(0);
} else {
  console.error(`browser access test failed after ${steps.length} steps: ${result.err?.stack ?? result.err}`);
  for (const line of result.logs) console.error(line);
  process.exit(1);
}
