// End-to-end test of the history panel in headless Chromium against a running server: page
// A types two words, opens the history, moves the slider back to where only the first word
// was and sees that old text in the read-only preview (and, with "Show authors", all of it in
// Alice's colour); then A restores it while page B is typing. Both pages and
// GET /api/text/{id} must converge on the restored text plus B's edits (the second word
// gone, B's later typing there exactly once). Leaves history.png,
// page A with the panel open, in ARTIFACT_DIR.
//
//   BASE_URL=http://127.0.0.1:3030 ARTIFACT_DIR=test-artifacts node web/tests/history.browser.mjs
//
// Needs Debian's chromium at /usr/bin/chromium (playwright cannot download browsers here).

import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const BASE_URL = (process.env.BASE_URL ?? "http://127.0.0.1:3030").replace(/\/+$/, "");
const ARTIFACT_DIR = path.resolve(process.env.ARTIFACT_DIR ?? "test-artifacts");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const OVERALL_TIMEOUT_MS = 120_000;

function randomId() {
  return `ht${Math.random().toString(36).slice(2, 10)}`;
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
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
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

async function serverText(docId) {
  return (await fetch(`${BASE_URL}/api/text/${docId}`)).text();
}

async function run() {
  const logs = [];
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
  });
  try {
    const docId = randomId();
    const a = await openPage(browser, docId, "Alice", logs);
    const b = await openPage(browser, docId, "Bob", logs);
    const text = (page) => page.evaluate(() => window.codraftText());

    // A types the first word; the revision where the text was exactly that is the target.
    await a.click(".cm-content");
    await a.keyboard.type("alpha ✓", { delay: 5 });
    await waitFor("the first word to be saved", async () => (await serverText(docId)) === "alpha ✓", 10_000);
    const history = await (await fetch(`${BASE_URL}/api/documents/${docId}/history`)).json();
    const target = history.revision;
    await a.keyboard.type(" beta", { delay: 5 });
    await waitFor("page B to have both words", async () => (await text(b)) === "alpha ✓ beta", 10_000);

    // Open the history: the sessions list Alice; the slider starts at the newest revision.
    await a.click("#history-toggle");
    await a.locator("#history-sessions li", { hasText: "Alice" }).first().waitFor({ timeout: 10_000 });
    await waitFor("the preview of the newest revision", () => a.evaluate(() => document.getElementById("history-preview").textContent === "alpha ✓ beta"), 10_000);

    // Move the slider back to the first word: the preview shows the old text, read-only,
    // with Alice's additions highlighted; the live editor keeps the current text.
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
    if ((await a.locator("#history-preview mark").count()) === 0) throw new Error("no change is highlighted in the preview");
    if ((await text(a)) !== "alpha ✓ beta") throw new Error("moving the slider changed the live text");

    // "Show authors" colours every character by who wrote it: all of it is Alice's here.
    await a.check("#history-authors");
    await waitFor(
      "the authors' colouring",
      () => a.evaluate(() => {
        const marks = [...document.querySelectorAll("#history-preview mark")];
        return marks.length > 0 && marks.map((m) => m.textContent).join("") === "alpha ✓";
      }),
      10_000,
    );
    await a.uncheck("#history-authors");

    // Restore while B types at the end; then B types more once the restore is in.
    await b.click(".cm-content");
    await b.keyboard.press("Control+End");
    const typing = b.keyboard.type(" gamma", { delay: 20 });
    await a.click("#history-restore");
    await typing;
    await waitFor("the restore to be saved", async () => !(await serverText(docId)).includes("beta"), 10_000);
    await b.keyboard.press("Control+End");
    await b.keyboard.type(" delta", { delay: 10 });

    const final = await waitFor(
      "both pages and the server to agree",
      async () => {
        const [ta, tb, ts] = [await text(a), await text(b), await serverText(docId)];
        return ta === tb && tb === ts && ts.includes(" delta") ? ts : null;
      },
      15_000,
    ).catch(async (err) => {
      throw new Error(`${err.message}\n  A: ${JSON.stringify(await text(a))}\n  B: ${JSON.stringify(await text(b))}\n  server: ${JSON.stringify(await serverText(docId))}`);
    });
    if (!final.startsWith("alpha ✓")) throw new Error(`the restored text is gone: ${JSON.stringify(final)}`);
    if (final.includes("beta")) throw new Error(`the restore did not remove the second word: ${JSON.stringify(final)}`);
    if (occurrences(final, " delta") !== 1) throw new Error(`B's later typing is not there exactly once: ${JSON.stringify(final)}`);
    // What B typed around the restore is kept unless it was committed before the restore
    // was made: so an end of " gamma" stays.
    const rest = final.slice("alpha ✓".length).replace(" delta", "");
    if (!" gamma".endsWith(rest)) {
      throw new Error(`unexpected text besides B's typing: ${JSON.stringify(final)}`);
    }
    await a.locator("#history-sessions li", { hasText: "Restore" }).first().waitFor({ timeout: 10_000 });
    fs.mkdirSync(ARTIFACT_DIR, { recursive: true });
    await a.screenshot({ path: path.join(ARTIFACT_DIR, "history.png") });
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
  console.log(`history panel: old text shown, restore converged; screenshot in ${path.join(ARTIFACT_DIR, "history.png")}`);
  console.log("history browser: 1 passed, 0 failed");
  process.exit(0);
} else {
  console.error(`history browser test failed: ${result.err?.stack ?? result.err}`);
  for (const line of result.logs) console.error(line);
  console.log("history browser: 0 passed, 1 failed");
  process.exit(1);
}
