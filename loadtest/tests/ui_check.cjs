// Drives the Javelin UI in Debian's Chromium with playwright-core and checks
// what a user sees. Prints one JSON line of findings; exits non-zero on the
// first failed check (with the reason). Screenshots go to <shots>. Function
// names come from the API (the hottest row of /api/v1/top), not from the
// demo's source, so the workload may change.
// Usage: node ui_check.cjs <base url> <service> <shots dir> <chromium path>
const { chromium } = require("playwright-core");
const path = require("path");

const [base, service, shots, executablePath] = process.argv.slice(2);

function check(ok, what) {
  if (!ok) throw new Error("UI check failed: " + what);
}

// The function with the most self value in the last 15 minutes, and its share
// of the total (what the UI's search for it must show, at least).
async function hottest() {
  const to = Date.now(), from = to - 15 * 60000;
  const q = new URLSearchParams({ service, type: "cpu", from, to, sort: "self", limit: 1 });
  const r = await fetch(`${base}/api/v1/top?${q}`);
  check(r.ok, `GET /api/v1/top answered ${r.status}`);
  const top = await r.json();
  check(top.rows.length > 0 && top.total > 0, "the API lists a hottest function");
  return { name: top.rows[0].name, share: top.rows[0].total / top.total };
}

const attr = (v) => '"' + v.replace(/["\\]/g, "\\$&") + '"';

(async () => {
  const browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const findings = {};
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const shot = (name) => page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
    const state = () => page.evaluate(() => ({ ...window.javelin }));

    // 1. The flamegraph renders non-empty for the demo service.
    await page.goto(`${base}/?view=flamegraph&service=${encodeURIComponent(service)}&type=cpu&range=15m`);
    await page.waitForFunction(() => window.javelin && window.javelin.drawn > 3, null, { timeout: 30000 });
    findings.drawn = (await state()).drawn;
    check(findings.drawn > 3, "flamegraph nodes drawn");
    const summary = await page.textContent("#summary");
    check(summary.includes(service), "summary names the service: " + summary);
    // How the profile was recorded, as the agent reported it.
    await page.waitForFunction(() => (window.javelin.sampling || []).length > 0, null, { timeout: 30000 });
    findings.sampling = (await state()).sampling;
    findings.basisLine = await page.textContent("#cpu-basis");
    check(findings.basisLine.includes("Sampling: " + findings.sampling[0]), "the sampling line: " + findings.basisLine);
    await shot("1-flamegraph");

    // 2. Search highlights matches and sums their share: at least the hottest
    // function's share as the API computes it (the search matches substrings).
    const hot = await hottest();
    findings.searchTerm = hot.name;
    findings.expectedShare = hot.share;
    await page.fill("#search", hot.name);
    await page.waitForFunction(() => window.javelin.matched > 0);
    const searched = await state();
    findings.searchMatches = searched.matched;
    findings.searchShare = searched.searchShare;
    check(searched.searchShare > 0 && searched.searchShare >= 0.9 * hot.share,
      `${hot.name}: search share ${searched.searchShare}, API share ${hot.share}`);
    check((await page.textContent("#search-share")).includes("% of the total"), "search share shown");
    check(new URL(page.url()).searchParams.get("search") === hot.name, "the URL carries the search");
    await shot("2-search");
    await page.fill("#search", "");

    // 3. A click focuses a subtree; the breadcrumb resets.
    const box = await page.locator("#flamegraph").boundingBox();
    await page.mouse.click(box.x + box.width / 2, box.y + 18 * 2 + 9); // a frame at depth 2
    await page.waitForFunction(() => window.javelin.focus !== "");
    findings.focused = (await state()).focus;
    check(await page.isVisible("#reset"), "reset button shown when focused");
    check((await page.locator("#breadcrumb span").count()) >= 2, "breadcrumb lists the path");
    check(new URL(page.url()).searchParams.has("focus"), "the URL carries the focus");
    await shot("3-focused");
    await page.click("#breadcrumb span >> nth=0");
    await page.waitForFunction(() => window.javelin.focus === "");
    check(!(await page.isVisible("#reset")), "breadcrumb 'all' resets the zoom");

    // 4. The top table sorts and a row highlights its function.
    await page.waitForSelector("#top tbody tr");
    await page.click("#top th[data-sort=total]");
    await page.waitForFunction(() => document.querySelector("#top th[data-sort=total]").classList.contains("sorted"));
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll("#top tbody tr")];
      const totals = rows.map((r) => r.cells[2].textContent);
      return rows.length > 1 && rows[0].dataset.name && totals.length > 1;
    });
    const first = await page.getAttribute("#top tbody tr >> nth=0", "data-name");
    findings.topByTotal = first;
    check(first === "java.lang.Thread.run" || first.includes("run") || first.length > 0, "top row by total");
    const hotRows = page.locator(`#top tbody tr[data-name=${attr(hot.name)}]`);
    const row = (await hotRows.count()) ? hotRows.first() : page.locator("#top tbody tr").first();
    await row.click();
    await page.waitForFunction(() => window.javelin.selected > 0);
    check(await row.evaluate((r) => r.classList.contains("selected")), "clicked row is highlighted");
    findings.selectedNodes = (await state()).selected;
    await shot("4-top-table");

    // 5. The ingestion page shows the truncation the test injected.
    await page.click('#tabs a[data-view=health]');
    await page.waitForSelector('#health-totals tr[data-key="Truncated parts"]');
    const truncated = await page.textContent('#health-totals tr[data-key="Truncated parts"] td.num');
    findings.truncatedParts = Number(truncated);
    check(Number(truncated) >= 1, "truncated parts shown: " + truncated);
    check((await page.textContent("#health-warning")).includes("truncated"), "truncation evidence shown");
    await shot("5-ingestion");

    // 6. Targets page lists the demo JVM as profiling.
    await page.click('#tabs a[data-view=targets]');
    await page.waitForSelector("#targets tbody tr");
    const states = await page.$$eval("#targets tbody tr td:nth-child(6)", (tds) => tds.map((t) => t.textContent));
    findings.targetStates = states;
    findings.targetSampling = await page.$$eval("#targets tbody tr td.sampling", (tds) => tds.map((t) => t.textContent));
    check(states.includes("profiling"), "a profiling target listed: " + states);
    await shot("6-targets");

    // 7. The diff view renders.
    await page.click('#tabs a[data-view=diff]');
    await page.waitForFunction(() => document.querySelector("#diff-summary").textContent.includes("left"));
    await shot("7-diff");

    // 8. Empty state: a service without data says so.
    await page.goto(`${base}/?view=flamegraph&service=no-such-service&type=cpu&range=5m`);
    await page.waitForFunction(() => !document.querySelector("#message").classList.contains("hidden"));
    findings.emptyMessage = await page.textContent("#message");
    check(/No data/.test(findings.emptyMessage), "empty state: " + findings.emptyMessage);
    check(errors.length === 0, "no page errors: " + errors.join("; "));
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(findings));
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
