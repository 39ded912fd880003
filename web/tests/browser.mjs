// End-to-end test of the web client in headless Chromium against a running server: two
// pages on one fresh document type different text (non-ASCII and astral characters
// included) at the same time in different places; both editors and GET /api/text/{id} must
// end up equal, each typed string present exactly once, and page A must show page B's
// caret with B's name, and a language chosen on A must reach B. Leaves a screenshot of both
// pages side by side, two-pages.png, in ARTIFACT_DIR.
//
//   BASE_URL=http://127.0.0.1:3030 ARTIFACT_DIR=test-artifacts node web/tests/browser.mjs
//
// Needs Debian's chromium at /usr/bin/chromium (playwright cannot download browsers here).

import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE_URL = (process.env.BASE_URL ?? "http://127.0.0.1:3030").replace(/\/+$/, "");
const ARTIFACT_DIR = path.resolve(process.env.ARTIFACT_DIR ?? "test-artifacts");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const OVERALL_TIMEOUT_MS = 120_000;

const TEXT_A = "héllo 🎉 from Alice";
const TEXT_B = "grüße 🚀 from Bob";

function randomId() {
  return `bt${Math.random().toString(36).slice(2, 10)}`;
}

/** Polls `check` (async, returns truthy when done) every 100 ms until `ms` elapse. */
async function waitFor(what, check, ms) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function occurrences(haystack, needle) {
  return haystack.split(needle).length - 1;
}

async function openPage(browser, docId, name, logs) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 720 } });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") logs.push(`[${name}] ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => logs.push(`[${name}] page error: ${e.message}`));
  await page.goto(`${BASE_URL}/#${docId}`);
  await page.waitForSelector('#status[data-status="connected"]', { timeout: 20_000 });
  await page.fill("#name", name);
  return page;
}

async function run() {
  const logs = [];
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
  try {
    const docId = randomId();
    const a = await openPage(browser, docId, "Alice", logs);
    const b = await openPage(browser, docId, "Bob", logs);
    const text = (page) => page.evaluate(() => window.codraftText());

    // A writes two lines; once B has them, A types at the start and B at the end, together.
    await a.click(".cm-content");
    await a.keyboard.type("first line\nsecond line", { delay: 5 });
    await waitFor("page B to receive page A's lines", async () => (await text(b)) === "first line\nsecond line", 10_000);
    await a.keyboard.press("Control+Home");
    await b.click(".cm-content");
    await b.keyboard.press("Control+End");
    await b.keyboard.press("Enter");
    await Promise.all([a.keyboard.type(`${TEXT_A}\n`, { delay: 15 }), b.keyboard.type(TEXT_B, { delay: 15 })]);

    const baseUrl = BASE_URL;
    const final = await waitFor(
      "both editors and the server to agree",
      async () => {
        const [ta, tb] = [await text(a), await text(b)];
        const res = await fetch(`${baseUrl}/api/text/${docId}`);
        const ts = await res.text();
        return ta === tb && tb === ts && ts.includes(TEXT_A) && ts.includes(TEXT_B) ? ts : null;
      },
      15_000,
    ).catch(async (err) => {
      const res = await fetch(`${baseUrl}/api/text/${docId}`);
      throw new Error(
        `${err.message}\n  A:      ${JSON.stringify(await text(a))}\n  B:      ${JSON.stringify(await text(b))}\n  server: ${JSON.stringify(await res.text())}`,
      );
    });
    for (const typed of [TEXT_A, TEXT_B, "first line", "second line"]) {
      const n = occurrences(final, typed);
      if (n !== 1) throw new Error(`${JSON.stringify(typed)} appears ${n} times in ${JSON.stringify(final)}`);
    }
    if (!final.startsWith(TEXT_A)) throw new Error(`page A typed at the start, but the text is ${JSON.stringify(final)}`);

    // B's caret, labelled with B's name, shows on A's page.
    await a.locator(".cd-caret-label", { hasText: "Bob" }).first().waitFor({ state: "visible", timeout: 10_000 });
    await a.locator("#users", { hasText: "Bob" }).waitFor({ timeout: 10_000 });

    // A language chosen on one page reaches the other.
    await a.selectOption("#language", "rust");
    await waitFor("page B to switch to Rust", () => b.evaluate(() => document.getElementById("language").value === "rust"), 10_000);

    // Select a word on B so the screenshot shows a remote selection too.
    await b.keyboard.press("Shift+Control+ArrowLeft");
    await a.waitForSelector(".cd-remote-selection", { timeout: 10_000 });

    // Both pages side by side in one picture.
    const shots = [await a.screenshot(), await b.screenshot()].map((png) => `data:image/png;base64,${png.toString("base64")}`);
    const sheet = await browser.newPage({ viewport: { width: 1920, height: 600 } });
    await sheet.setContent(
      `<body style="margin:0;display:flex;gap:8px;background:#8c959f">${shots
        .map((src) => `<img src="${src}" style="width:956px;display:block">`)
        .join("")}</body>`,
    );
    await sheet.waitForFunction(() => [...document.images].every((img) => img.complete));
    fs.mkdirSync(ARTIFACT_DIR, { recursive: true });
    await sheet.screenshot({ path: path.join(ARTIFACT_DIR, "two-pages.png") });
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
let result;
try {
  result = await Promise.race([run(), timeout]);
} catch (err) {
  result = { ok: false, err, logs: [] };
}
if (result.ok) {
  console.log(`two pages converged; screenshot in ${path.join(ARTIFACT_DIR, "two-pages.png")}`);
  console.log("browser: 1 passed, 0 failed");
  process.exit(0);
} else {
  console.error(`browser test failed: ${result.err?.stack ?? result.err}`);
  for (const line of result.logs) console.error(line);
  console.log("browser: 0 passed, 1 failed");
  process.exit(1);
}
