// Drives the ringcast dashboard as an operator would, in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core): signs in, creates a channel, watches a message
// published over HTTP arrive in the live tail, pauses the tail, finds the message in history,
// sees the stats and the node's figures move, reads the policies, disables the channel, and
// checks every page on a phone-sized screen. One JSON line per check on stdout; a screenshot
// of each page in SHOTS_DIR. Exit code 0 only when every check passed.
//
//   node check.mjs BASE_URL ADMIN_KEY SHOTS_DIR
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, adminKey, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const CHANNEL = "demo:*", NAME = "demo:room";
let failed = 0;

function report(name, ok, detail) {
  console.log(JSON.stringify({ check: name, ok, detail: detail ?? null }));
  if (!ok) failed++;
}

async function check(name, fn) {
  try {
    const detail = await fn();
    report(name, true, detail);
  } catch (e) {
    report(name, false, String(e && e.stack || e));
  }
}

async function rest(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${adminKey}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const overall = setTimeout(() => { report("finished in time", false, "90 s"); process.exit(1); }, 90_000);
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  // Nothing may be fetched from anywhere but the broker.
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(base) && !r.url().startsWith(base.replace("http", "ws"))) foreign.push(r.url()); });

  await check("a wrong key is refused", async () => {
    await page.goto(base + "/dashboard");
    await page.getByLabel("Admin key or project_admin token").fill("not-the-key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("Sign-in failed").waitFor({ timeout: 5000 });
    await page.screenshot({ path: `${shots}/sign-in.png` });
  });

  // The refused sign-in logged its 401; from here on, no console error is expected.
  consoleErrors.length = 0;

  await check("sign in with the admin key", async () => {
    await page.getByLabel("Admin key or project_admin token").fill(adminKey);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Channels" }).waitFor({ timeout: 5000 });
  });

  await check("create a channel", async () => {
    await page.getByLabel("Pattern").fill(CHANNEL);
    await page.getByLabel("Description").fill("demo rooms");
    await page.getByRole("button", { name: "Create channel" }).click();
    await page.locator(`tr[data-pattern="${CHANNEL}"]`).waitFor({ timeout: 5000 });
    const { body } = await rest("GET", "/api/realtime/channels");
    const c = body.find((c) => c.pattern === CHANNEL);
    if (!c || !c.enabled || c.description !== "demo rooms") throw new Error(JSON.stringify(body));
    await page.screenshot({ path: `${shots}/channels.png`, fullPage: true });
    return c.id;
  });

  await check("edit a channel's webhook URLs", async () => {
    const row = page.locator(`tr[data-pattern="${CHANNEL}"]`);
    await row.getByRole("button", { name: "Edit" }).click();
    await page.locator('textarea[name="webhookUrls"]').last().fill("http://127.0.0.1:9/hook");
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByText(`${CHANNEL} saved`).waitFor({ timeout: 5000 });
    const { body } = await rest("GET", "/api/realtime/channels");
    const c = body.find((c) => c.pattern === CHANNEL);
    if (JSON.stringify(c.webhookUrls) !== '["http://127.0.0.1:9/hook"]') throw new Error(JSON.stringify(c));
  });

  await check("a published message appears in the live tail, pretty-printed", async () => {
    await page.goto(base + "/dashboard#/tail");
    await page.getByLabel("Channel name").fill(NAME);
    await page.getByRole("button", { name: "Watch" }).click();
    await page.getByText(`Watching ${NAME}.`).waitFor({ timeout: 5000 });
    const r = await rest("POST", "/api/realtime/messages",
      { channel: NAME, event: "greeting", payload: { text: "hello from the tour", n: 1 } });
    if (r.status !== 201) throw new Error(JSON.stringify(r));
    const msg = page.locator('article.msg[data-event="greeting"]');
    await msg.waitFor({ timeout: 5000 });
    const pre = await msg.locator("pre").innerText();
    if (!pre.includes('"text": "hello from the tour"')) throw new Error(pre);
    await page.screenshot({ path: `${shots}/live-tail.png`, fullPage: true });
    return r.body.messageId;
  });

  await check("pause holds messages, filter shows one event", async () => {
    await page.getByRole("button", { name: "Pause" }).click();
    await rest("POST", "/api/realtime/messages", { channel: NAME, event: "other", payload: { n: 2 } });
    await page.getByRole("button", { name: "Resume (1 new)" }).waitFor({ timeout: 5000 });
    if (await page.locator('article.msg[data-event="other"]').count() !== 0) throw new Error("shown while paused");
    await page.getByLabel("Only event").fill("other");
    await page.getByRole("button", { name: "Resume (1 new)" }).click();
    await page.locator('article.msg[data-event="other"]').waitFor({ timeout: 5000 });
    await page.getByLabel("Only event").fill("greeting");
    await rest("POST", "/api/realtime/messages", { channel: NAME, event: "other", payload: { n: 3 } });
    await rest("POST", "/api/realtime/messages", { channel: NAME, event: "greeting", payload: { n: 4 } });
    await page.locator('article.msg[data-event="greeting"]').nth(1).waitFor({ timeout: 5000 });
    const others = await page.locator('article.msg[data-event="other"]').count();
    if (others !== 1) throw new Error(`${others} "other" messages shown through a greeting filter`);
  });

  await check("find the message in history", async () => {
    await page.goto(base + "/dashboard#/history");
    await page.getByLabel("Channel name").fill(NAME);
    await page.getByLabel("Event").fill("greeting");
    await page.getByRole("button", { name: "Search" }).click();
    await page.getByText("2 messages, newest first.").waitFor({ timeout: 5000 });
    const rows = page.locator("tbody tr");
    await rows.last().locator("summary").click();
    const pre = await rows.last().locator("pre").innerText();
    if (!pre.includes("hello from the tour")) throw new Error(pre);
    await page.screenshot({ path: `${shots}/history.png`, fullPage: true });
  });

  await check("stats show the messages and the top events as a chart", async () => {
    await page.goto(base + "/dashboard#/stats");
    await page.locator("#stat-total").waitFor({ timeout: 5000 });
    const total = Number(await page.locator("#stat-total").innerText());
    if (total !== 4) throw new Error(`total ${total}`);
    const bars = await page.locator('svg[aria-label="Messages per event name"] rect.bar').count();
    if (bars !== 2) throw new Error(`${bars} bars`);
    await rest("POST", "/api/realtime/messages", { channel: NAME, event: "third", payload: null });
    await page.locator('svg[aria-label="Messages per event name"] rect.bar').nth(2).waitFor({ timeout: 8000 });
    const moved = Number(await page.locator("#stat-total").innerText());
    if (moved !== 5) throw new Error(`after one more publish: ${moved}`);
    await page.screenshot({ path: `${shots}/stats.png`, fullPage: true });
  });

  await check("the node page shows health, engine and publishes moving", async () => {
    await page.goto(base + "/dashboard#/node");
    await page.locator("#node-health").waitFor({ timeout: 5000 });
    if (await page.locator("#node-health").innerText() !== "ok") throw new Error("health");
    if (!(await page.locator("#node-engine").innerText()).startsWith("memory")) throw new Error("engine");
    const before = Number(await page.locator("#node-published-total").innerText());
    await rest("POST", "/api/realtime/messages", { channel: NAME, event: "tick", payload: 1 });
    await page.waitForFunction((b) => Number(document.querySelector("#node-published-total").textContent) > b, before, { timeout: 8000 });
    await page.waitForTimeout(2500); // a second sample draws the sparklines
    await page.screenshot({ path: `${shots}/node.png`, fullPage: true });
  });

  await check("the policies in force are listed", async () => {
    await page.goto(base + "/dashboard#/policies");
    await page.getByText("allow_authenticated_subscribe").waitFor({ timeout: 5000 });
    await page.screenshot({ path: `${shots}/policies.png`, fullPage: true });
  });

  await check("disable the channel", async () => {
    await page.goto(base + "/dashboard#/channels");
    const row = page.locator(`tr[data-pattern="${CHANNEL}"]`);
    await row.getByRole("button", { name: "Disable" }).click();
    await page.getByText(`${CHANNEL} disabled`).waitFor({ timeout: 5000 });
    await row.getByText("disabled", { exact: true }).waitFor({ timeout: 5000 });
    const { body } = await rest("GET", "/api/realtime/channels");
    if (body.find((c) => c.pattern === CHANNEL).enabled !== false) throw new Error("still enabled");
    const r = await rest("POST", "/api/realtime/messages", { channel: NAME, event: "late", payload: 1 });
    if (r.status !== 404) throw new Error(`publish to a disabled channel: ${r.status}`);
  });

  await check("nothing was fetched from elsewhere, no script error", async () => {
    if (foreign.length) throw new Error(`foreign requests: ${foreign.join(", ")}`);
    if (consoleErrors.length) throw new Error(`console errors: ${consoleErrors.join(" | ")}`);
  });

  await check("every page fits a phone-sized screen", async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const p = await phone.newPage();
    await p.goto(base + "/dashboard");
    await p.evaluate((k) => sessionStorage.setItem("ringcast.token", k), adminKey);
    const wide = [];
    for (const view of ["channels", "tail", "history", "stats", "node", "policies"]) {
      await p.goto(`${base}/dashboard#/${view}`);
      await p.reload();
      await p.locator("main h2").waitFor({ timeout: 5000 });
      await p.waitForTimeout(300);
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow > 0) wide.push(`${view} +${overflow}px`);
      if (view === "channels" || view === "stats") await p.screenshot({ path: `${shots}/phone-${view}.png`, fullPage: true });
    }
    await phone.close();
    if (wide.length) throw new Error(`wider than the screen: ${wide.join(", ")}`);
  });
} finally {
  clearTimeout(overall);
  await browser.close();
}
console.log(JSON.stringify({ done: true, failed }));
process.exit(failed ? 1 : 0);
