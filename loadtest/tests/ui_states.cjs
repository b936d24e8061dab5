// The UI's states under load and failure, in Debian's Chromium with
// playwright-core against the real query API (driven by ui_states.rs, which
// seeds the data and owns the servers). Names come from the API, never from a
// workload's source. Prints one JSON line of findings last; exits non-zero on
// the first failed check (with the reason). Screenshots go to <shots>.
//
// Usage: node ui_states.cjs <scenario> <base url> <shots dir> <chromium path>
//   order        a slow answer of an older selection never overwrites a newer
//                view (aborted, and with abort disabled, discarded); requests
//                per refresh; the health chart's time and value axes
//   scan_limit   an API whose row limit every query exceeds: the 422 message
//   auth         an API with --auth-token ($JAVELIN_UI_TOKEN): sign-in form,
//                a wrong token, the right one, sign-out
//   rollups      a range over closed hours the driver rolled up
//                ($JAVELIN_UI_RANGE = "<service>,<from ms>,<to ms>"): the
//                summary says which resolution answered
//   unavailable  ClickHouse stopped and started again by the driver: asks it
//                with a line "ui-states: stop-clickhouse" / "ui-states:
//                start-clickhouse" on stdout and waits for "ok" on stdin
const { chromium } = require("playwright-core");
const path = require("path");

const [scenario, base, shots, executablePath] = process.argv.slice(2);
const findings = { scenario };

function check(ok, what) {
  if (!ok) throw new Error(`UI check failed (${scenario}): ${what}`);
}

async function api(p) {
  const token = process.env.JAVELIN_UI_TOKEN;
  const r = await fetch(base + p, { headers: token ? { Authorization: "Bearer " + token } : {} });
  check(r.ok, `GET ${p} answered ${r.status}`);
  return r.json();
}

const lastMinutes = (m) => { const to = Date.now(); return { from: to - m * 60000, to }; };

// The function with the most self value of `service` (cpu, last 15 minutes).
async function hottest(service) {
  const q = new URLSearchParams({ service, type: "cpu", ...lastMinutes(15), sort: "self", limit: 1 });
  const top = await api(`/api/v1/top?${q}`);
  check(top.rows.length > 0, `the API lists functions of ${service}`);
  return top.rows[0].name;
}

// Polls `cond` in Node until it holds, or fails after `ms` with `what`.
async function until(what, ms, cond) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    check(Date.now() < deadline, `timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function within(what, ms, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

// Asks the driver (ui_states.rs) to do something to the servers.
let lines = null;
function ask(verb) {
  if (!lines) {
    lines = { queue: [], waiting: null, rl: require("readline").createInterface({ input: process.stdin }) };
    lines.rl.on("line", (l) => { if (lines.waiting) { const w = lines.waiting; lines.waiting = null; w(l); } else lines.queue.push(l); });
  }
  process.stdout.write(`ui-states: ${verb}\n`);
  return within(`the driver to ${verb}`, 120000, new Promise((resolve) => {
    if (lines.queue.length) resolve(lines.queue.shift()); else lines.waiting = resolve;
  })).then((reply) => check(reply === "ok", `${verb}: ${reply}`));
}

async function open(browser, init) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  if (init) await page.addInitScript(init);
  return page;
}

const shot = (page, name) => page.screenshot({ path: path.join(shots, `${scenario}-${name}.png`), fullPage: true });
const hook = (page) => page.evaluate(() => ({ ...window.javelin }));

// What the flamegraph view shows: the summary, the top table's first names.
const shown = (page) => page.evaluate(() => ({
  summary: document.querySelector("#summary").textContent,
  top: [...document.querySelectorAll("#top tbody tr")].slice(0, 5).map((r) => r.dataset.name),
  rendered: window.javelin.rendered,
  drawn: window.javelin.drawn,
}));

// Every text #summary takes from now on, in window.__summaries.
const watchSummary = (page) => page.evaluate(() => {
  window.__summaries = [];
  new MutationObserver(() => window.__summaries.push(document.querySelector("#summary").textContent))
    .observe(document.querySelector("#summary"), { childList: true, characterData: true, subtree: true });
});

// ---- order -------------------------------------------------------------------

async function order(browser) {
  const { from, to } = lastMinutes(15);
  const { services } = await api(`/api/v1/services?from=${from}&to=${to}`);
  check(services.length >= 2, "two services listed: " + services);
  const [a, b] = services;
  const [hotA, hotB] = [await hottest(a), await hottest(b)];
  check(hotA !== hotB, `the services' hottest functions differ: ${hotA}`);
  Object.assign(findings, { old: a, newer: b, hotOld: hotA, hotNewer: hotB, modes: {} });

  // "abort": the UI as it is; "ignore": AbortController.abort disabled, so the
  // old answers do arrive and only the generation check keeps them out.
  for (const mode of ["abort", "ignore"]) {
    const page = await open(browser, mode === "ignore" ? () => { AbortController.prototype.abort = function () {}; } : null);
    const held = [];
    let holding = true, release, heard;
    const released = new Promise((r) => { release = r; });
    const firstHeld = new Promise((r) => { heard = r; });
    const failed = [];
    page.on("requestfailed", (r) => failed.push({ url: r.url(), error: (r.failure() || {}).errorText }));
    // Network fault injection: the old selection's flamegraph and top answers
    // are fetched from the API at once but reach the page only on release.
    await page.route(
      (u) => (u.pathname === "/api/v1/flamegraph" || u.pathname === "/api/v1/top") && u.searchParams.get("service") === a,
      async (route) => {
        if (!holding) return route.continue();
        const entry = { url: route.request().url(), outcome: "" };
        held.push(entry);
        try {
          const response = await route.fetch();
          heard();
          await released;
          await route.fulfill({ response });
          entry.outcome = "delivered";
        } catch (e) {
          heard();
          entry.outcome = "refused: " + String(e.message).split("\n")[0];
        }
      });
    const started = Date.now();
    await page.goto(`${base}/?view=flamegraph&service=${encodeURIComponent(a)}&type=cpu&range=15m`);
    await within("the old selection's request to be held", 30000, firstHeld);
    // The newer selection, while the old answers hang.
    await page.selectOption("#service", b);
    await page.waitForFunction((b) => document.querySelector("#summary").textContent.startsWith(b + " ·") && window.javelin.drawn > 0, b);
    const before = await shown(page);
    check(before.top[0] === hotB, `the newer view's top row is ${hotB}: ${before.top}`);
    await watchSummary(page);
    await shot(page, `${mode}-1-newer-before-release`);
    holding = false;
    release();
    await until("every held answer released", 30000, () => held.every((h) => h.outcome));
    const mine = (f) => held.some((h) => h.url === f.url);
    if (mode === "abort") {
      // The page cancelled the old requests when the selection changed.
      await until("the old requests to fail as aborted", 30000, () => held.every((h) => failed.some((f) => f.url === h.url)));
      check(failed.filter(mine).every((f) => /ABORTED/i.test(f.error)), "aborted: " + JSON.stringify(failed.filter(mine)));
      check((await hook(page)).aborted >= held.length, "the page counted the aborts");
    } else {
      // The old answers reached the page, which dropped them (or, were it
      // wrong, rendered them: then the checks below fail).
      check(held.every((h) => h.outcome === "delivered"), "old answers delivered: " + JSON.stringify(held));
      await page.waitForFunction(([n, a]) => window.javelin.discarded >= n || window.__summaries.some((s) => s.startsWith(a + " ·")),
        [held.length, a]);
    }
    const after = await shown(page);
    const summaries = await page.evaluate(() => window.__summaries);
    check(after.summary.startsWith(b + " ·") && after.top[0] === hotB && after.drawn > 0,
      "the view still shows the newer selection: " + JSON.stringify(after));
    check(!summaries.some((s) => s.startsWith(a + " ·")), "the old selection was never rendered: " + JSON.stringify(summaries));
    // The old selection's functions are not in the drawn flamegraph.
    await page.fill("#search", hotA);
    await page.waitForFunction(() => document.querySelector("#search-share").textContent !== "");
    check((await hook(page)).matched === 0, `${hotA} is not in the view`);
    await page.fill("#search", "");
    const h = await hook(page);
    findings.modes[mode] = {
      held: held.map((x) => x.outcome), aborted: h.aborted, discarded: h.discarded,
      newerRenderedAfterMs: Date.now() - started, summaryAfter: after.summary,
    };
    await shot(page, `${mode}-2-after-release`);
    check(page.errors.length === 0, "no page errors: " + page.errors.join("; "));
    if (mode === "abort") await requestsAndAxes(page);
    await page.close();
  }
}

// A refresh with nothing changed re-reads only the view's data; the health
// chart has a labelled time axis (adapted to the range) and a value axis.
async function requestsAndAxes(page) {
  // Twice: the first may re-read lists older than a minute.
  for (let i = 0; i < 2; i++) {
    const gen = (await hook(page)).generation;
    await page.click("#refresh-now");
    await page.waitForFunction((g) => window.javelin.lastRefresh && window.javelin.lastRefresh.generation > g, gen);
  }
  const last = (await hook(page)).lastRefresh;
  findings.requestsPerRefresh = last.requests;
  // The flamegraph view's data: the flamegraph, the top table and the timeline.
  check(last.outcome === "ok" && last.requests === 3, "a refresh with nothing changed makes 3 requests: " + JSON.stringify(last));

  const axis = async (range, minutes) => {
    const asked = Date.now();
    if (range) await page.selectOption("#range", range);
    await page.waitForFunction((m) => {
      const a = window.javelin.healthAxis;
      return a && Math.abs(a.to - a.from - m * 60000) < 1000 && window.javelin.lastRefresh.outcome === "ok";
    }, minutes);
    const a = (await hook(page)).healthAxis;
    check(a.to >= asked - 60000, "a fresh axis");
    check(a.ticks.length >= 2, `≥ 2 time ticks for ${minutes} min: ${JSON.stringify(a.ticks)}`);
    check(a.ticks.every((t) => t.t >= a.from && t.t <= a.to), "ticks inside the range");
    check(a.ticks.every((t) => /\d/.test(t.label)), "every tick labelled");
    check(new Set(a.ticks.map((t) => t.label)).size === a.ticks.length, "distinct labels: " + a.ticks.map((t) => t.label));
    check(a.ticks.every((t) => t.t % 60000 === 0 || a.step < 60000), "ticks at whole minutes");
    check(a.values.length >= 2 && a.values[0] === 0, "a value axis from 0: " + a.values);
    return { step: a.step, labels: a.ticks.map((t) => t.label), values: a.values };
  };
  await page.click("#tabs a[data-view=health]");
  const quarter = await axis(null, 15);
  await shot(page, "health-axis-15m");
  const hour = await axis("1h", 60);
  await shot(page, "health-axis-1h");
  check(hour.step > quarter.step, `the tick step grows with the range: ${quarter.step} → ${hour.step}`);
  findings.axis = { "15m": quarter, "1h": hour };
  const totals = await page.textContent('#health-totals tr[data-key="Windows"] td.num');
  check(Number(totals) > 0, "health totals shown: " + totals);
}

// ---- scan_limit --------------------------------------------------------------

async function scanLimit(browser) {
  const page = await open(browser);
  await page.goto(`${base}/?view=flamegraph&type=cpu&range=15m`);
  await page.waitForFunction(() => window.javelin.errorKind !== "");
  const h = await hook(page);
  const message = await page.textContent("#message");
  Object.assign(findings, { kind: h.errorKind, message, requestId: h.requestId });
  check(h.errorKind === "scan_limit", "kind scan_limit: " + h.errorKind);
  check(message.startsWith("Too much data for one query:"), "the scan-limit message: " + message);
  check(!h.requestId || message.includes(h.requestId), "the message names the request id");
  check(await page.isHidden("#banner"), "no outage banner for a limit");
  await shot(page, "message");
  check(page.errors.length === 0, "no page errors: " + page.errors.join("; "));
  await page.close();
}

// ---- auth --------------------------------------------------------------------

async function auth(browser) {
  const token = process.env.JAVELIN_UI_TOKEN;
  check(token && token.length >= 16, "JAVELIN_UI_TOKEN set");
  const stored = (page) => page.evaluate(() => ({ session: sessionStorage.getItem("javelin.token"), local: localStorage.getItem("javelin.token") }));
  const page = await open(browser);
  await page.goto(`${base}/?view=flamegraph&type=cpu&range=15m`);
  await page.waitForSelector("#signin-form", { state: "visible" });
  check(await page.isHidden("#signout"), "no sign-out button before signing in");
  check(await page.isHidden("#view-flamegraph"), "no view before signing in");
  findings.firstMessage = await page.textContent("#signin-message");
  check(/needs an access token/.test(findings.firstMessage), "asks for a token: " + findings.firstMessage);
  await shot(page, "1-form");

  await page.fill("#token", "not-the-token-" + token.slice(0, 4) + "-wrong");
  await page.click("#signin-submit");
  await page.waitForFunction(() => window.javelin.authFailures >= 2);
  await page.waitForSelector("#signin-form", { state: "visible" });
  const h = await hook(page);
  findings.wrongMessage = await page.textContent("#signin-message");
  check(/not accepted/.test(findings.wrongMessage), "says the token was not accepted: " + findings.wrongMessage);
  check(await page.evaluate(() => document.querySelector("#signin-message").classList.contains("error")), "shown as an error");
  check(!h.requestId || findings.wrongMessage.includes(h.requestId), "the message names the request id " + h.requestId);
  check((await stored(page)).session === null, "a refused token is not kept");
  await shot(page, "2-wrong-token");

  await page.fill("#token", token);
  await page.click("#signin-submit");
  await page.waitForFunction(() => window.javelin.drawn > 0);
  check(await page.isVisible("#signout"), "a sign-out button once signed in");
  check(await page.isHidden("#signin-form"), "the form is gone");
  findings.summary = await page.textContent("#summary");
  check(findings.summary.length > 0, "data shown");
  const kept = await stored(page);
  check(kept.session === token && kept.local === null, "the token in sessionStorage only: " + JSON.stringify({ session: !!kept.session, local: kept.local }));
  await shot(page, "3-signed-in");

  // Another browser context (as after a browser restart) holds no token.
  const other = await open(browser);
  await other.goto(`${base}/?view=flamegraph&range=15m`);
  await other.waitForSelector("#signin-form", { state: "visible" });
  await other.close();

  await page.click("#signout");
  await page.waitForSelector("#signin-form", { state: "visible" });
  check((await stored(page)).session === null, "sign-out forgets the token");
  check(await page.isHidden("#view-flamegraph"), "no view after signing out");
  check((await page.textContent("#summary")) === "" && (await hook(page)).drawn === 0, "no data left on the page");
  check((await page.locator("#top tbody tr").count()) === 0, "the top table is emptied");
  findings.signedOutMessage = await page.textContent("#signin-message");
  await shot(page, "4-signed-out");
  await page.reload();
  await page.waitForSelector("#signin-form", { state: "visible" });
  check(page.errors.length === 0, "no page errors: " + page.errors.join("; "));
  await page.close();
}

// ---- rollups -----------------------------------------------------------------

// What the page shows for a range the API answers partly from rollups, beside
// the API's own answer for the same selection.
async function rollups(browser) {
  const [service, from, to] = (process.env.JAVELIN_UI_RANGE || "").split(",");
  check(service && from && to, "JAVELIN_UI_RANGE names a service and a range");
  const q = new URLSearchParams({ service, type: "cpu", from, to });
  const fg = await api(`/api/v1/flamegraph?${q}`);
  Object.assign(findings, { resolution: fg.metadata.resolution, total: fg.total });
  const page = await open(browser);
  await page.goto(`${base}/?view=flamegraph&${q}`);
  await page.waitForFunction(() => window.javelin.drawn > 0);
  findings.summary = await page.textContent("#summary");
  findings.pageTotal = (await hook(page)).flameTotal;
  await shot(page, "1-rolled-up");
  check(page.errors.length === 0, "no page errors: " + page.errors.join("; "));
  await page.close();
}

// ---- unavailable -------------------------------------------------------------

async function unavailable(browser) {
  const page = await open(browser);
  await page.goto(`${base}/?view=flamegraph&type=cpu&range=15m`);
  await page.waitForFunction(() => window.javelin.drawn > 0);
  const good = await shown(page);
  await shot(page, "1-good");

  await ask("stop-clickhouse");
  await page.click("#refresh-now");
  await page.waitForSelector("#banner", { state: "visible" });
  findings.banner = await page.textContent("#banner");
  const h = await hook(page);
  Object.assign(findings, { kind: h.errorKind, requestId: h.requestId });
  check(findings.banner.includes("ClickHouse unavailable"), "the banner: " + findings.banner);
  check(/Retrying/.test(findings.banner) && /stale/.test(findings.banner), "says it retries and the view is stale: " + findings.banner);
  check(h.errorKind === "unavailable" && h.stale, "kind unavailable, stale: " + JSON.stringify(h));
  check(!h.requestId || findings.banner.includes(h.requestId), "the banner names the request id");
  check(await page.evaluate(() => document.querySelector("#main").classList.contains("stale")), "the view is marked stale");
  const kept = await shown(page);
  check(kept.summary === good.summary && kept.drawn > 0, "the last good view is kept: " + JSON.stringify(kept));
  await shot(page, "2-stale");

  // A page opened during the outage has no good view to keep.
  const fresh = await open(browser);
  await fresh.goto(`${base}/?view=flamegraph&type=cpu&range=15m`);
  await fresh.waitForSelector("#banner", { state: "visible" });
  findings.freshMessage = await fresh.textContent("#message");
  check(/No data shown: ClickHouse is unavailable/.test(findings.freshMessage), "the empty view says why: " + findings.freshMessage);
  await shot(fresh, "3-fresh-page");
  check(fresh.errors.length === 0, "no page errors: " + fresh.errors.join("; "));
  await fresh.close();

  // Back: the periodic refresh (every 15 s) clears the banner by itself.
  await ask("start-clickhouse");
  const back = Date.now();
  await page.waitForSelector("#banner", { state: "hidden", timeout: 90000 });
  findings.recoveredAfterMs = Date.now() - back;
  const h2 = await hook(page);
  check(!h2.stale && h2.drawn > 0 && h2.errorKind === "", "fresh again: " + JSON.stringify(h2));
  check(!(await page.evaluate(() => document.querySelector("#main").classList.contains("stale"))), "no longer marked stale");
  await shot(page, "4-recovered");
  check(page.errors.length === 0, "no page errors: " + page.errors.join("; "));
  await page.close();
}

(async () => {
  const browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const run = { order, scan_limit: scanLimit, auth, rollups, unavailable }[scenario];
    check(run, "unknown scenario");
    await run(browser);
  } finally {
    await browser.close();
    if (lines) lines.rl.close();
  }
  console.log(JSON.stringify(findings));
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
