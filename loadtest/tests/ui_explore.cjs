// The exploration UI (timeline brush, tag explorer, sandwich, compare with the
// ranked diff, package colours) in Debian's Chromium with playwright-core,
// against the real pipeline that ui_explore.rs runs. Every check compares what
// the page shows with the API's own answer for the same selection. Prints one
// JSON line of findings last; exits non-zero on the first failed check (with
// the reason). Screenshots go to <shots>.
//
// Usage: node ui_explore.cjs <base url> <shots dir> <chromium path> <spec JSON>
//   spec: { service, from, to (ms: a fixed range whose windows are all stored),
//           bucket (s), baseline: [from, to], comparison: [from, to] (ms: a
//           fresh and a stale phase), grower (name suffix expected first in the
//           ranked diff), pods: { name: { total, frames } } (injected),
//           version (the demo JVM's application version) }
const { chromium } = require("playwright-core");
const path = require("path");

const [base, shots, executablePath, specJson] = process.argv.slice(2);
const spec = JSON.parse(specJson);
const findings = {};

function check(ok, what) {
  if (!ok) throw new Error("UI explore check failed: " + what);
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function api(p, params) {
  const r = await fetch(`${base}${p}?${new URLSearchParams(params)}`);
  check(r.ok, `GET ${p} answered ${r.status}: ${await r.clone().text()}`);
  return r.json();
}

const selection = (extra = {}) => ({ service: spec.service, type: "cpu", from: spec.from, to: spec.to, ...extra });
const pageUrl = (params) => `${base}/?${new URLSearchParams({ service: spec.service, type: "cpu", range: "custom", from: spec.from, to: spec.to, ...params })}`;
// An API error the page gets instead of the real answer (fault injection).
const refusal = (route) => route.fulfill({ status: 422, contentType: "application/json",
  body: JSON.stringify({ error: "injected: narrow the selection", kind: "scan_limit", request_id: "injected" }) });
const endpoint = (name) => (u) => u.pathname === "/api/v1/" + name;
const SANDWICH_ROUTE = endpoint("sandwich"), TAGS_ROUTE = endpoint("tags"), FLAMEGRAPH_ROUTE = endpoint("flamegraph");

// rgb (0-255) → [hue (deg), saturation, lightness (0-1)].
function hsl([r, g, b]) {
  r /= 255; g /= 255; b /= 255;
  const max = Math.max(r, g, b), min = Math.min(r, g, b), l = (max + min) / 2, d = max - min;
  if (!d) return [0, 0, l];
  const s = d / (1 - Math.abs(2 * l - 1));
  const h = max === r ? ((g - b) / d) % 6 : max === g ? (b - r) / d + 2 : (r - g) / d + 4;
  return [(h * 60 + 360) % 360, s, l];
}
const hueDistance = (a, b) => Math.min(Math.abs(a - b), 360 - Math.abs(a - b));

(async () => {
  const browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const shot = (name) => page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
    const hook = () => page.evaluate(() => JSON.parse(JSON.stringify({ ...window.javelin, colorOf: undefined })));
    const params = () => new URL(page.url()).searchParams;
    // The colour drawn at a frame of `canvas` (a pixel inside its box, above its label).
    const colorAt = async (canvas, name) => {
      const rect = (await hook()).rects[canvas].find((r) => r.name === name && r.w >= 4);
      check(rect, `${name} drawn at least 4 px wide on #${canvas}`);
      return page.evaluate(([id, x, y]) => {
        const c = document.getElementById(id), k = window.devicePixelRatio || 1;
        return [...c.getContext("2d").getImageData(Math.floor(x * k), Math.floor(y * k), 1, 1).data.slice(0, 3)];
      }, [canvas, rect.x + 1.5, rect.y + 2.5]);
    };
    // Drags across buckets i..j of a timeline (from the middle of one to the middle of the other).
    const brush = async (canvas, i, j, shift) => {
      const g = (await hook()).timelines[canvas];
      check(g && g.points > Math.max(i, j), `#${canvas} drawn with buckets ${i}..${j}: ${JSON.stringify(g)}`);
      const box = await page.locator("#" + canvas).boundingBox();
      const x = (k) => box.x + g.left + ((k + 0.5) / g.points) * g.width;
      const y = box.y + g.top + g.height / 2;
      if (shift) await page.keyboard.down("Shift");
      await page.mouse.move(x(i), y);
      await page.mouse.down();
      await page.mouse.move((x(i) + x(j)) / 2, y, { steps: 4 });
      await page.mouse.move(x(j), y, { steps: 4 });
      await page.mouse.up();
      if (shift) await page.keyboard.up("Shift");
    };
    const rendered = async () => (await hook()).rendered;
    // Waits for `cond` in the page; on a timeout, fails naming `what` and the page's state.
    const waitFor = async (what, cond, arg) => {
      try {
        await page.waitForFunction(cond, arg, { timeout: 30000 });
      } catch (e) {
        const h = await hook().catch(() => ({}));
        check(false, `timed out waiting for ${what} (url ${page.url()}; error ${JSON.stringify(h.error)}; brushed ${JSON.stringify(h.brushed)}; ` +
          `timeline ${JSON.stringify(h.timeline && { from: h.timeline.from, to: h.timeline.to })}; compare ${JSON.stringify(h.compare && { ...h.compare, rows: undefined })})`);
      }
    };
    const waitRendered = (what, after) => waitFor(what + " rendered", (g) => window.javelin.rendered > g && window.javelin.lastRefresh && window.javelin.lastRefresh.outcome === "ok", after);

    // ---- the timeline above the flamegraph: the API's buckets ----------------------
    await page.goto(pageUrl({ view: "flamegraph" }));
    await waitFor("the flamegraph and its timeline", () => window.javelin.timeline && window.javelin.drawn > 0);
    const fullTl = await api("/api/v1/timeline", selection());
    const fullFg = await api("/api/v1/flamegraph", selection());
    let h = await hook();
    check(same(h.timeline.points, fullTl.points) && h.timeline.step === fullTl.step_seconds,
      `the timeline's buckets are the API's (step ${h.timeline.step} vs ${fullTl.step_seconds}, ${h.timeline.points.length} vs ${fullTl.points.length} points)`);
    check(fullTl.total === fullFg.total && h.flameTotal === fullFg.total, `timeline total ${fullTl.total} = flamegraph total ${fullFg.total} = page ${h.flameTotal}`);
    check(h.timelines.timeline.points === fullTl.points.length, "every bucket drawn");
    findings.timeline = { step: fullTl.step_seconds, points: fullTl.points.length, total: fullTl.total };
    await shot("1-timeline");

    // ---- (a) brush a range: URL, flamegraph and top table follow -------------------
    const nonzero = fullTl.points.map((p, i) => (p[1] > 0 ? i : -1)).filter((i) => i >= 0);
    check(nonzero.length >= 4, "at least 4 buckets with data: " + nonzero.length);
    const i = nonzero[Math.floor(nonzero.length * 0.3)], j = nonzero[Math.floor(nonzero.length * 0.7)];
    const step = fullTl.step_seconds;
    const want = { from: fullTl.points[i][0] * 1000, to: (fullTl.points[j][0] + step) * 1000 };
    const before = await rendered();
    await brush("timeline", i, j, false);
    await waitFor(`the brushed range ${JSON.stringify(want)} as the view's range`, ([f, t]) => window.javelin.timeline && window.javelin.timeline.from === f && window.javelin.timeline.to === t, [want.from, want.to]);
    await waitRendered("the brushed range", before);
    h = await hook();
    check(h.brushed && h.brushed.from === want.from && h.brushed.to === want.to, "brushed to bucket edges: " + JSON.stringify(h.brushed));
    check(params().get("range") === "custom" && Number(params().get("from")) === want.from && Number(params().get("to")) === want.to,
      `the URL carries the brushed range ${JSON.stringify(want)}: ${page.url()}`);
    const brushedFg = await api("/api/v1/flamegraph", selection(want));
    const bucketsSum = fullTl.points.slice(i, j + 1).reduce((s, p) => s + p[1], 0);
    check(h.flameTotal === brushedFg.total, `flamegraph total ${h.flameTotal} = the API's ${brushedFg.total} for the brushed range`);
    check(brushedFg.total === bucketsSum, `= the brushed buckets' sum ${bucketsSum}`);
    check(brushedFg.total < fullFg.total, `the total changed: ${fullFg.total} → ${brushedFg.total}`);
    const topApi = await api("/api/v1/top", selection({ ...want, sort: "self", limit: 200 }));
    const topPage = await page.$$eval("#top tbody tr", (rows) => rows.map((r) => ({ name: r.dataset.name, self: Number(r.dataset.self), total: Number(r.dataset.total) })));
    check(same(topPage, topApi.rows.map((r) => ({ name: r.name, self: r.self, total: r.total }))), "the top table is the API's for the brushed range");
    check(h.timeline.points.length > 0 && h.timeline.total === brushedFg.total, "the timeline follows the range: " + h.timeline.total);
    findings.brushed = { ...want, total: h.flameTotal, apiTotal: brushedFg.total, bucketsSum, fullTotal: fullFg.total };
    await shot("2-brushed");

    // ---- (c) a sandwich from the top table ---------------------------------------------
    const row = topPage[0];
    await page.click("#top tbody tr >> nth=0 >> button.sw");
    await waitFor(`the sandwich of ${row.name}`, (n) => window.javelin.sandwich && window.javelin.sandwich.function === n && window.javelin.sandwich.callersDrawn > 0, row.name);
    h = await hook();
    check(await page.isVisible("#view-sandwich"), "the sandwich view is shown");
    check(h.sandwich.self === row.self && h.sandwich.total === row.total,
      `sandwich self/total ${h.sandwich.self}/${h.sandwich.total} = the row's ${row.self}/${row.total}`);
    check(h.sandwich.callersTotal === row.total && h.sandwich.calleesTotal === row.total, "both halves' roots are the function's total");
    check(h.sandwich.calleesDrawn > 0, "callees drawn");
    const swApi = await api("/api/v1/sandwich", selection({ ...want, function: row.name }));
    check(swApi.self === row.self && swApi.total === row.total, "the API's sandwich agrees");
    // Its direct callers and callees: level 1 of each tree, as the API sends them.
    const level1 = (tree) => {
      const out = [], l = tree.levels[1] || [];
      for (let k = 0; k < l.length; k += 4) out.push({ name: tree.names[l[k + 3]], total: l[k + 1] });
      return out;
    };
    check(same(h.sandwich.callers, level1(swApi.callers)) && same(h.sandwich.callees, level1(swApi.callees)),
      "callers and callees as the API's: " + JSON.stringify(h.sandwich.callers.slice(0, 3)));
    check(params().get("view") === "sandwich" && params().get("function") === row.name, "the URL names the sandwich: " + page.url());
    findings.sandwich = { function: row.name, self: h.sandwich.self, total: h.sandwich.total, rowSelf: row.self, rowTotal: row.total,
      callers: h.sandwich.callers.length, callees: h.sandwich.callees.length };
    await shot("3-sandwich");
    // The link reproduces it.
    await page.reload();
    await waitFor("the sandwich from the reloaded link", (n) => window.javelin.sandwich && window.javelin.sandwich.function === n && window.javelin.sandwich.callersDrawn > 0, row.name);
    check((await hook()).sandwich.total === row.total, "the reloaded link shows the same sandwich");
    // From a flamegraph frame: right click, "Sandwich".
    await page.click("#tabs a[data-view=flamegraph]");
    await waitFor("the flamegraph tab", () => window.javelin.drawn > 0 && (window.javelin.rects.flamegraph || []).length > 2 && document.querySelector("#view-flamegraph:not(.hidden)"));
    const frame = (await hook()).rects.flamegraph.filter((r) => r.level >= 2 && r.w > 40 && !r.name.startsWith("[") && r.name !== "other")
      .sort((a, b) => b.w - a.w)[0];
    check(frame, "a frame at depth ≥ 2 to right-click");
    const fbox = await page.locator("#flamegraph").boundingBox();
    await page.mouse.click(fbox.x + frame.x + frame.w / 2, fbox.y + frame.y + 9, { button: "right" });
    await page.click("#node-menu button[data-act=sandwich]");
    await waitFor(`the sandwich of the frame ${frame.name}`, (n) => window.javelin.sandwich && window.javelin.sandwich.function === n && window.javelin.lastRefresh.outcome === "ok", frame.name);
    const fromNode = (await hook()).sandwich;
    const nodeApi = await api("/api/v1/top", selection({ ...want, sort: "total", limit: 10000 }));
    const nodeRow = nodeApi.rows.find((r) => r.name === frame.name);
    check(nodeRow && nodeRow.total === fromNode.total && nodeRow.self === fromNode.self,
      `the sandwich of ${frame.name} from the flamegraph has the API's self/total ${JSON.stringify(nodeRow)}: ${fromNode.self}/${fromNode.total}`);
    findings.sandwichFromNode = { function: frame.name, total: fromNode.total };
    // An error leaves none of the flamegraph's old numbers on screen.
    await page.click("#tabs a[data-view=flamegraph]");
    await waitFor("the flamegraph tab again", () => window.javelin.drawn > 0 && document.querySelector("#view-flamegraph:not(.hidden)"));
    await page.route(FLAMEGRAPH_ROUTE, refusal);
    await page.click("#refresh-now");
    await waitFor("the flamegraph's error", () => window.javelin.errorKind === "scan_limit");
    check(await page.textContent("#summary") === "" && await page.isHidden("#warning") && await page.isHidden("#flame-body"), "the error leaves no old summary");
    await page.unroute(FLAMEGRAPH_ROUTE);
    await page.click("#refresh-now");
    await waitFor("the flamegraph back", () => window.javelin.drawn > 0 && window.javelin.errorKind === "");
    // From the keyboard: arrows zoom into a frame, Shift+F10 opens its menu, Enter picks "Sandwich".
    await page.focus("#flamegraph");
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowDown");
    await waitFor("a frame at depth 2 zoomed by the keyboard", () => window.javelin.focus !== "" && document.querySelector("#breadcrumb").children.length === 3);
    const keyed = (await hook()).focus;
    await page.keyboard.press("Shift+F10");
    check(await page.isVisible("#node-menu") && (await page.textContent("#node-menu-name")) === keyed, "Shift+F10 opens the zoomed frame's menu");
    check(await page.evaluate(() => document.activeElement.dataset.act === "sandwich"), "the menu has the focus, on Sandwich");
    await page.keyboard.press("Enter");
    await waitFor(`the sandwich of ${keyed} from the keyboard`, (n) => window.javelin.sandwich && window.javelin.sandwich.function === n && window.javelin.lastRefresh.outcome === "ok", keyed);
    const keyedRow = nodeApi.rows.find((r) => r.name === keyed);
    check(keyedRow && (await hook()).sandwich.total === keyedRow.total, `the keyboard's sandwich has ${keyed}'s total ${JSON.stringify(keyedRow)}`);
    // What is typed in the function box survives a refresh (here the Refresh button, clicked without taking the focus).
    await page.focus("#sw-function");
    await page.fill("#sw-function", "com.example.Typing.inProgress");
    let gen = await rendered();
    await page.evaluate(() => document.getElementById("refresh-now").click());
    await waitRendered("a refresh while typing", gen);
    check(await page.inputValue("#sw-function") === "com.example.Typing.inProgress", "the typed function survives a refresh");
    // An error leaves none of the last answer's numbers on screen.
    await page.route(SANDWICH_ROUTE, refusal);
    await page.keyboard.press("Enter");
    await waitFor("the sandwich's error", () => window.javelin.errorKind === "scan_limit");
    check(await page.textContent("#sw-summary") === "" && await page.isHidden("#sw-warning") && await page.isHidden("#sw-body") &&
      /Too much data/.test(await page.textContent("#sw-message")), "the error replaces the sandwich and its summary");
    await page.unroute(SANDWICH_ROUTE);

    // ---- (b) the tag explorer: pods with the API's totals; a click filters --------------
    // By version first: the demo's, and none for the injected pods.
    await page.goto(pageUrl({ view: "tags", tag: "version" }));
    await waitFor("the tag explorer by version", () => window.javelin.tags && window.javelin.tags.label === "version");
    const versionsApi = await api("/api/v1/tags", selection({ label: "version", limit: 10 }));
    h = await hook();
    const injectedTotal = Object.values(spec.pods).reduce((s, p) => s + p.total, 0);
    check(same(h.tags.rows, versionsApi.values.map((v) => ({ value: v.value, total: v.total }))), "the version table is the API's: " + JSON.stringify(h.tags.rows));
    check(same(h.tags.rows, [{ value: spec.version, total: fullFg.total - injectedTotal }, { value: "", total: injectedTotal }]),
      `the demo's version ${spec.version} and the injected pods without one: ${JSON.stringify(h.tags.rows)}`);
    check(same(await page.$$eval("#tags tbody tr.inert td.name", (tds) => tds.map((t) => t.textContent)), ["(none)"]), "the empty version shown as (none), not clickable");
    check((await page.textContent("#tags-summary")).includes("by version"), "the tags' summary");
    await page.route(TAGS_ROUTE, refusal);
    await page.selectOption("#tag-label", "node");
    await waitFor("the tags' error", () => window.javelin.errorKind === "scan_limit");
    check(await page.textContent("#tags-summary") === "" && await page.isHidden("#tags-warning") && await page.isHidden("#tags-body"),
      "the error leaves no old summary: " + await page.textContent("#tags-summary"));
    await page.unroute(TAGS_ROUTE);
    const podsGen = await rendered();
    await page.selectOption("#tag-label", "pod");
    await waitRendered("the tag explorer by pod", podsGen);
    await waitFor("the tag explorer by pod", () => window.javelin.tags && window.javelin.tags.label === "pod");
    check(params().get("tag") === "pod", "the URL carries the label: " + page.url());
    const tagsApi = await api("/api/v1/tags", selection({ label: "pod", limit: 10 }));
    h = await hook();
    check(same(h.tags.rows, tagsApi.values.map((v) => ({ value: v.value, total: v.total }))) && h.tags.total === tagsApi.total,
      "the tag table is the API's: " + JSON.stringify(h.tags.rows));
    check(tagsApi.total === fullFg.total, `the tags' total ${tagsApi.total} = the flamegraph's ${fullFg.total}`);
    for (const [pod, want] of Object.entries(spec.pods)) {
      const r = h.tags.rows.find((x) => x.value === pod);
      check(r && r.total === want.total, `${pod} listed with its injected total ${want.total}: ${JSON.stringify(r)}`);
    }
    const shownValues = await page.$$eval("#tags tbody tr[data-value]", (rows) => rows.map((r) => r.dataset.value));
    check(Object.keys(spec.pods).every((p) => shownValues.includes(p)), "the table rows: " + shownValues);
    check((await hook()).timelines["tags-timeline"].points === tagsApi.values[0].points.length, "the stacked timeline drawn");
    findings.tags = { rows: h.tags.rows, distinct: h.tags.distinct };
    await shot("4-tags");
    const [pod, injected] = Object.entries(spec.pods)[0];
    const tagsGen = await rendered();
    // The value is a button: from the keyboard.
    await page.focus(`#tags tbody tr[data-value="${pod}"] button`);
    await page.keyboard.press("Enter");
    await waitFor(`the flamegraph filtered by pod ${pod}`, (p) => document.querySelector("#pod").value === p && !document.querySelector("#view-flamegraph").classList.contains("hidden"), pod);
    await waitRendered(`pod ${pod}'s flamegraph`, tagsGen);
    await waitFor(`pod ${pod}'s flamegraph drawn`, () => window.javelin.drawn > 0);
    h = await hook();
    check(params().get("pod") === pod && params().get("view") === "flamegraph", "the URL carries the pod filter: " + page.url());
    check(h.flameTotal === injected.total, `${pod}'s flamegraph total ${h.flameTotal} = its injected ${injected.total}`);
    const drawnNames = [...new Set(h.rects.flamegraph.map((r) => r.name))].filter((n) => n !== "total").sort();
    check(same(drawnNames, [...injected.frames].sort()), `${pod}'s frames are exactly the injected ones: ${drawnNames}`);
    findings.podFlame = { pod, total: h.flameTotal, frames: drawnNames };
    await shot("5-tag-filtered");

    // ---- (e) one hue per package, lightness per function --------------------------------
    const score = hsl(await colorAt("flamegraph", "com.example.search.SearchIndex.score"));
    const tokenize = hsl(await colorAt("flamegraph", "com.example.search.Tokenizer.tokenize"));
    const price = hsl(await colorAt("flamegraph", "com.example.billing.PricingService.price"));
    const main = hsl(await colorAt("flamegraph", "com.example.app.Main.run"));
    findings.colours = { score, tokenize, price, main };
    check(hueDistance(score[0], tokenize[0]) <= 2, `one package, one hue: ${score[0]} vs ${tokenize[0]}`);
    check(Math.abs(score[2] - tokenize[2]) > 0.01, `functions of a package differ in lightness: ${score[2]} vs ${tokenize[2]}`);
    check(hueDistance(score[0], price[0]) >= 10 && hueDistance(score[0], main[0]) >= 10 && hueDistance(price[0], main[0]) >= 10,
      `other packages, other hues: search ${score[0]}, billing ${price[0]}, app ${main[0]}`);
    const kinds = await page.evaluate(() => ["com.example.search.SearchIndex.score", "SearchIndex.score", "java.util.HashMap$Node.getKey",
      "do_syscall_64_[k]", "__memmove_avx_unaligned_erms", "JavaThread::run", "[truncated]", "net/http.(*conn).serve", "github.com/x/y.(*T).m",
      "main.work", "runtime.mallocgc", "/usr/lib/libc.so.6"].map((n) => { const c = window.javelin.colorOf(n); return [c.kind, c.package]; }));
    check(same(kinds, [["java", "com.example.search"], ["java", ""], ["java", "java.util"], ["kernel", "[kernel]"], ["native", "[native]"], ["native", "[native]"], ["marker", ""],
      ["go", "net/http"], ["go", "github.com/x/y"], ["java", "main"], ["java", "runtime"], ["native", "[native]"]]),
      "packages as the UI reads them: " + JSON.stringify(kinds));
    // Search highlighting still works over the package colours.
    await page.fill("#search", "Tokenizer");
    await waitFor("one search match", () => window.javelin.matched === 1);
    check(same(await colorAt("flamegraph", "com.example.search.Tokenizer.tokenize"), [0xd6, 0x33, 0x6c]), "the match is highlighted");
    check(same(await colorAt("flamegraph", "com.example.search.SearchIndex.score"), [0xe2, 0xe5, 0xea]), "the rest is greyed");
    await page.fill("#search", "");

    // ---- (d) compare a fresh phase (baseline) with a stale one ---------------------------
    await page.goto(pageUrl({ view: "diff", baseline: "ranges", step: spec.bucket }));
    await waitFor("the compare view asking for ranges", () => window.javelin.compare && window.javelin.compare.ready === false && window.javelin.timelines["cmp-timeline"]);
    check(/Drag across the timeline/.test(await page.textContent("#diff-message")), "asks for the ranges");
    const cmpTl = await api("/api/v1/timeline", selection({ step: spec.bucket }));
    check(cmpTl.step_seconds === spec.bucket, "5-s buckets");
    const bucketOf = (ms) => cmpTl.points.findIndex((p) => p[0] * 1000 === ms);
    const lastBucket = (range) => bucketOf(range[1] - spec.bucket * 1000);
    const [b0, b1] = [bucketOf(spec.baseline[0]), lastBucket(spec.baseline)];
    const [c0, c1] = [bucketOf(spec.comparison[0]), lastBucket(spec.comparison)];
    check(b0 >= 0 && b1 >= b0 && c0 >= 0 && c1 >= c0, `the phases' buckets on the timeline: ${[b0, b1, c0, c1]}`);
    await brush("cmp-timeline", b0, b1, false);
    await waitFor("the brushed baseline", (f) => window.javelin.compare && window.javelin.compare.left && window.javelin.compare.left.from === f, spec.baseline[0]);
    await brush("cmp-timeline", c0, c1, true);
    await waitFor("the brushed comparison and the comparison drawn", ([f, t]) => window.javelin.compare && window.javelin.compare.ready && window.javelin.compare.right.from === f && window.javelin.compare.right.to === t,
      spec.comparison);
    h = await hook();
    check(h.compare.left.from === spec.baseline[0] && h.compare.left.to === spec.baseline[1], "baseline = the fresh phase: " + JSON.stringify(h.compare.left));
    const p = params();
    check(p.get("baseline") === "ranges" && Number(p.get("left_from")) === spec.baseline[0] && Number(p.get("left_to")) === spec.baseline[1] &&
      Number(p.get("right_from")) === spec.comparison[0] && Number(p.get("right_to")) === spec.comparison[1], "the URL carries both ranges: " + page.url());
    const sides = { from: spec.baseline[0], to: spec.baseline[1], right_from: spec.comparison[0], right_to: spec.comparison[1] };
    const rankedApi = await api("/api/v1/diff/functions", selection({ ...sides, by: "self", limit: 100 }));
    const leftFg = await api("/api/v1/flamegraph", selection({ from: spec.baseline[0], to: spec.baseline[1] }));
    const rightFg = await api("/api/v1/flamegraph", selection({ from: spec.comparison[0], to: spec.comparison[1] }));
    check(h.compare.left.total === leftFg.total && h.compare.right.total === rightFg.total && h.compare.diffLeftTotal === leftFg.total && h.compare.diffRightTotal === rightFg.total,
      `side totals are the API's: ${h.compare.left.total}/${leftFg.total}, ${h.compare.right.total}/${rightFg.total}`);
    const first = h.compare.rows[0];
    check(same(h.compare.rows, rankedApi.rows.slice(0, 20).map((r) => ({ name: r.name, left_share: r.left_share, right_share: r.right_share, change: r.change,
      left_self: r.left_self, left_total: r.left_total, right_self: r.right_self, right_total: r.right_total }))), "the ranked rows are the API's");
    check(first.name.endsWith(spec.grower), `the first ranked row is ${spec.grower}: ${first.name} (${first.change})`);
    check(first.left_share < first.right_share && first.change > 0, "it grew");
    const firstRow = await page.getAttribute("#ranked tbody tr >> nth=0", "data-name");
    check(firstRow === first.name, "the table's first row: " + firstRow);
    check(h.compare.leftDrawn > 0 && h.compare.rightDrawn > 0, "both flamegraphs drawn");
    // The same function has the same colour on both sides.
    const leftNames = new Set(h.rects["cmp-left-fg"].filter((r) => r.w >= 6).map((r) => r.name));
    const common = h.rects["cmp-right-fg"].filter((r) => r.w >= 6 && r.level >= 2 && leftNames.has(r.name)).map((r) => r.name);
    check(common.length > 0, "a function drawn on both sides");
    const lc = await colorAt("cmp-left-fg", common[0]), rc = await colorAt("cmp-right-fg", common[0]);
    check(same(lc, rc), `${common[0]} has one colour on both sides: ${lc} vs ${rc}`);
    findings.ranked = { first: first.name, change: first.change, leftShare: first.left_share, rightShare: first.right_share,
      functions: h.compare.functions, sameColour: common[0] };
    check(!h.compare.omitted.left || (await page.textContent("#cmp-left-title")).includes("folded"), "the baseline's title says nodes were folded");
    await shot("6-compare");
    const localText = (ms) => page.evaluate((t) => localInput(t), ms);
    const inputMs = (id) => page.$eval(id, (e) => new Date(e.value).getTime());
    check(await inputMs("#cmp-left-from") === spec.baseline[0] && await inputMs("#cmp-right-to") === spec.comparison[1],
      `the brushed ranges in the typed inputs: ${await page.inputValue("#cmp-left-from")}, ${await page.inputValue("#cmp-right-to")}`);
    // The sandwich of the grower in the comparison: that side's range, its ranked self and total.
    const compareUrl = page.url();
    await page.click("#ranked tbody tr >> nth=0 >> button[data-side=right]");
    await waitFor(`the sandwich of ${first.name} in the comparison`, (n) => window.javelin.sandwich && window.javelin.sandwich.function === n && window.javelin.lastRefresh.outcome === "ok", first.name);
    h = await hook();
    check(h.sandwich.self === first.right_self && h.sandwich.total === first.right_total && h.sandwich.from === spec.comparison[0] && h.sandwich.to === spec.comparison[1],
      `the comparison's sandwich: ${h.sandwich.self}/${h.sandwich.total} = ${first.right_self}/${first.right_total}, over ${h.sandwich.from}..${h.sandwich.to}`);
    check(Number(params().get("sw_from")) === spec.comparison[0] && Number(params().get("sw_to")) === spec.comparison[1], "the URL carries the side's range: " + page.url());
    check(!h.sandwich.omitted || (await page.textContent("#sw-summary")).includes("folded"), "the sandwich says nodes were folded");
    await page.reload();
    await waitFor("the comparison's sandwich from the link", (t) => window.javelin.sandwich && window.javelin.sandwich.total === t && window.javelin.sandwich.selection, first.right_total);
    findings.sandwichInComparison = { function: first.name, self: h.sandwich.self, total: h.sandwich.total };
    // A baseline frame's menu: the baseline's range.
    await page.goto(compareUrl);
    await waitFor("the comparison again", () => window.javelin.compare && window.javelin.compare.ready && window.javelin.compare.leftDrawn > 0);
    const leftFrame = (await hook()).rects["cmp-left-fg"].find((r) => r.name === common[0]);
    const lbox = await page.locator("#cmp-left-fg").boundingBox();
    await page.mouse.click(lbox.x + leftFrame.x + leftFrame.w / 2, lbox.y + leftFrame.y + 9, { button: "right" });
    await page.click("#node-menu button[data-act=sandwich]");
    await waitFor(`the sandwich of ${common[0]} in the baseline`, (n) => window.javelin.sandwich && window.javelin.sandwich.function === n && window.javelin.lastRefresh.outcome === "ok", common[0]);
    const leftSw = await api("/api/v1/sandwich", selection({ from: spec.baseline[0], to: spec.baseline[1], function: common[0] }));
    h = await hook();
    check(h.sandwich.total === leftSw.total && h.sandwich.from === spec.baseline[0], `the baseline's sandwich of ${common[0]}: ${h.sandwich.total} = ${leftSw.total}`);
    await page.click("#tabs a[data-view=diff]");
    await waitFor("the comparison once more", () => window.javelin.compare && window.javelin.compare.ready);
    // Ranked by total.
    gen = await rendered();
    await page.selectOption("#diff-by", "total");
    await waitRendered("the ranking by total", gen);
    await waitFor("the ranking by total", () => window.javelin.compare.ready && window.javelin.compare.by === "total");
    const byTotal = await api("/api/v1/diff/functions", selection({ ...sides, by: "total", limit: 100 }));
    h = await hook();
    check(same(h.compare.rows.map((r) => [r.name, r.change]), byTotal.rows.slice(0, 20).map((r) => [r.name, r.change])), "ranked by total as the API");
    check(params().get("by") === "total", "the URL carries by=total");
    findings.rankedByTotal = h.compare.rows[0].name;
    await shot("7-compare-by-total");
    // The previous-period preset still works.
    gen = await rendered();
    await page.selectOption("#baseline", "previous");
    await waitRendered("the previous-period comparison", gen);
    await waitFor("the previous-period comparison", () => window.javelin.compare.ready && window.javelin.compare.mode === "previous");
    h = await hook();
    const prev = { from: 2 * spec.from - spec.to, to: spec.from };
    check(h.compare.left.from === prev.from && h.compare.left.to === prev.to && h.compare.right.from === spec.from && h.compare.right.to === spec.to,
      "previous period: " + JSON.stringify([h.compare.left, h.compare.right]));
    check(h.compare.diffRightTotal === fullFg.total, `the comparison is the range: ${h.compare.diffRightTotal} = ${fullFg.total}`);
    check((await page.textContent("#diff-summary")).includes("left"), "the diff summary");
    await shot("8-compare-previous");
    // A typed baseline: the comparison (the range) keeps its exact ends.
    await page.fill("#cmp-left-from", await localText(spec.baseline[0]));
    await page.fill("#cmp-left-to", await localText(spec.baseline[1]));
    await waitFor("the typed baseline", ([b, c]) => { const x = window.javelin.compare; return x && x.ready && x.mode === "ranges" && x.left.from === b[0] && x.left.to === b[1] &&
      x.right.from === c[0] && x.right.to === c[1]; }, [spec.baseline, [spec.from, spec.to]]);
    check(Number(params().get("left_from")) === spec.baseline[0] && Number(params().get("right_to")) === spec.to, "the URL carries the typed range: " + page.url());

    // ---- the API's longest range (168 h): zoom out stops there; Compare at 7 days -------
    const HOURS = 3600e3;
    await page.goto(pageUrl({ view: "flamegraph", from: spec.to - 100 * HOURS }));
    await waitFor("the 100-h flamegraph", (f) => window.javelin.timeline && window.javelin.timeline.from === f && window.javelin.lastRefresh.outcome === "ok", spec.to - 100 * HOURS);
    gen = await rendered();
    await page.click("#zoom-out");
    await waitRendered("the zoomed-out range", gen);
    h = await hook();
    check(h.timeline && h.timeline.to - h.timeline.from === 168 * HOURS && Number(params().get("to")) - Number(params().get("from")) === 168 * HOURS,
      "zoom out stops at 168 h: " + page.url());
    check(await page.isDisabled("#zoom-out"), "and cannot go further");
    await page.goto(`${base}/?${new URLSearchParams({ view: "diff", service: spec.service, type: "cpu", range: "7d", baseline: "previous" })}`);
    await waitFor("the 7-day comparison with its timeline", () => { const c = window.javelin.compare; return c && c.ready && c.timeline && c.timeline.points > 0; });
    h = await hook();
    check(h.lastRefresh.outcome === "ok" && h.compare.rows.length > 0 && await page.isVisible("#ranked tbody tr >> nth=0") && await page.isVisible("#diff"),
      "the 7-day comparison shows the diff and the ranked table");
    check(h.compare.timeline.to - h.compare.timeline.from === 168 * HOURS && h.compare.diffRightTotal > 0, "its timeline is the last 168 h: " + JSON.stringify(h.compare.timeline));
    findings.week = { rows: h.compare.rows.length, rightTotal: h.compare.diffRightTotal, timeline: h.compare.timeline };
    await shot("9-compare-week");
    check(errors.length === 0, "no page errors: " + errors.join("; "));
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(findings));
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
