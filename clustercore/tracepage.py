"""The page :meth:`clustercore.tracing.Trace.to_html` writes: HTML, CSS and the script that
draws the trace as SVG, all inline (the page loads nothing). ``__TITLE__`` and ``__DATA__``
(the trace as JSON) are filled in."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
  body { font: 13px system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
  h1 { font-size: 16px; margin: 0 0 6px; }
  #summary { margin-bottom: 8px; color: #444; }
  svg { display: block; user-select: none; }
  .lane-label { font: 12px monospace; fill: #333; }
  .lane { fill: #f6f6f6; }
  .tick { stroke: #ccc; }
  .tick-label { font: 11px sans-serif; fill: #666; }
  .event { stroke: rgba(0,0,0,.25); stroke-width: .5; cursor: default; }
  .event.failed { stroke: #d00; stroke-width: 2; }
  .event.last { stroke: #000; stroke-width: 2; }
  .end-line { stroke: #c00; stroke-dasharray: 4 3; }
  #legend span { display: inline-block; margin: 4px 14px 0 0; }
  #legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -2px; }
  table { border-collapse: collapse; margin-top: 12px; }
  td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
  th { background: #f3f3f3; }
  tr.straggler td { color: #c00; font-weight: bold; }
  #tip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #999; padding: 4px 6px;
         font: 12px monospace; display: none; white-space: pre; box-shadow: 1px 1px 3px rgba(0,0,0,.2); }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div id="summary"></div>
<svg id="chart" xmlns="http://www.w3.org/2000/svg"></svg>
<div id="legend"></div>
<table id="workers"></table>
<div id="tip"></div>
<script id="trace-data" type="application/json">__DATA__</script>
<script>
(function () {
  "use strict";
  const T = JSON.parse(document.getElementById("trace-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.getElementById("chart");
  const tip = document.getElementById("tip");
  const LEFT = 100, RIGHT = 50, TOP = 26, LANE = 28, GAP = 6, MAX_ROWS = 4;
  const pids = T.pids.slice().sort((a, b) => a - b);
  const lane = new Map(pids.map((p, i) => [p, i]));
  const end = Math.max(T.duration, ...T.events.map(e => e.end), 1e-6);
  let view = [0, end];
  const width = () => Math.max(600, (window.innerWidth || 1200) - 40);
  const height = TOP + pids.length * (LANE + GAP) + 10;

  function hue(name) {
    let h = 0;
    for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return h % 360;
  }
  const colors = new Map();
  for (const e of T.events) if (!colors.has(e.function)) colors.set(e.function, `hsl(${hue(e.function)},65%,55%)`);

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    (parent || svg).appendChild(node);
    return node;
  }
  const fmt = s => s === 0 ? "0" : s >= 1 ? s.toFixed(2) + " s" : (s * 1e3).toFixed(s >= 0.01 ? 1 : 3) + " ms";
  const bytes = b => b >= 1e6 ? (b / 1e6).toFixed(1) + " MB" : b >= 1e3 ? (b / 1e3).toFixed(1) + " kB" : b + " B";

  // Who finished last: the process whose last call ended latest (the pmap's straggler).
  const lastEnd = new Map();
  for (const e of T.events) lastEnd.set(e.pid, Math.max(lastEnd.get(e.pid) || 0, e.end));
  let straggler = null;
  for (const [p, t] of lastEnd) if (straggler === null || t > lastEnd.get(straggler)) straggler = p;
  const lastEvent = T.events.reduce((a, e) => (a === null || e.end > a.end ? e : a), null);

  const axis = el("g", {});
  const lanes = el("g", {});
  const bars = el("g", {});
  pids.forEach((p, i) => {
    el("rect", {class: "lane", x: LEFT, y: TOP + i * (LANE + GAP), height: LANE}, lanes);
    const label = el("text", {class: "lane-label", x: 4, y: TOP + i * (LANE + GAP) + LANE / 2 + 4}, lanes);
    label.textContent = (p === 1 ? "pid 1 (driver)" : "pid " + p);
  });
  // Calls that overlap on one process (it runs several at once) go to sub-rows of its lane.
  const row = new Map(), rows = new Map(), reach = new Map();
  for (const e of T.events.slice().sort((a, b) => a.start - b.start)) {
    const ends = reach.get(e.pid) || [];
    let i = ends.findIndex(t => t <= e.start);
    if (i < 0) { i = Math.min(ends.length, MAX_ROWS - 1); }
    ends[i] = Math.max(ends[i] || 0, e.end);
    reach.set(e.pid, ends);
    row.set(e, i);
    rows.set(e.pid, Math.max(rows.get(e.pid) || 1, i + 1));
  }
  const rects = T.events.map(e => {
    const cls = "event" + (e.failed ? " failed" : "") + (e === lastEvent ? " last" : "");
    const h = (LANE - 4) / rows.get(e.pid);
    const r = el("rect", {class: cls, y: TOP + lane.get(e.pid) * (LANE + GAP) + 2 + row.get(e) * h, height: h,
                          fill: colors.get(e.function), "data-pid": e.pid}, bars);
    const what = e.function + (e.elements > 1 ? "  (" + e.elements + " elements)" : "");
    const text = `pid ${e.pid}  ${what}\\nstart ${fmt(e.start)}  took ${fmt(e.end - e.start)}\\n` +
                 `${bytes(e.bytes)} in  ${e.failed ? "FAILED" : "ok"}`;
    el("title", {}, r).textContent = text;
    r.addEventListener("mousemove", ev => {
      tip.textContent = text; tip.style.display = "block";
      tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
    });
    r.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    return [e, r];
  });
  const endLine = el("line", {class: "end-line", y1: TOP - 4, y2: height - 6});

  function draw() {
    const w = width();
    const span = view[1] - view[0];
    const x = t => LEFT + (t - view[0]) / span * (w - LEFT - RIGHT);
    svg.setAttribute("width", w);
    svg.setAttribute("height", height);
    for (const r of lanes.querySelectorAll(".lane")) r.setAttribute("width", w - LEFT - RIGHT);
    for (const [e, r] of rects) {
      const x0 = Math.max(x(e.start), LEFT), x1 = Math.min(x(e.end), w - RIGHT);
      r.setAttribute("x", x0);
      r.setAttribute("width", Math.max(x1 - x0, x1 >= LEFT && x0 <= w - RIGHT ? 1 : 0));
    }
    const lastX = x(lastEvent ? lastEvent.end : end);
    endLine.setAttribute("x1", lastX); endLine.setAttribute("x2", lastX);
    endLine.style.display = lastX >= LEFT && lastX <= w - RIGHT ? "" : "none";
    axis.textContent = "";
    const step = Math.pow(10, Math.floor(Math.log10(span / 5)));
    const nice = [1, 2, 5, 10].map(m => m * step).find(s => span / s <= 10) || step * 10;
    for (let t = Math.ceil(view[0] / nice) * nice; t <= view[1]; t += nice) {
      el("line", {class: "tick", x1: x(t), x2: x(t), y1: TOP - 4, y2: height - 6}, axis);
      el("text", {class: "tick-label", x: x(t) + 2, y: TOP - 8}, axis).textContent = fmt(t);
    }
  }

  svg.addEventListener("wheel", ev => {
    ev.preventDefault();
    const w = width(), span = view[1] - view[0];
    const at = view[0] + Math.min(Math.max((ev.offsetX - LEFT) / (w - LEFT - RIGHT), 0), 1) * span;
    const k = ev.deltaY < 0 ? 0.8 : 1.25;
    view = [at - (at - view[0]) * k, at + (view[1] - at) * k];
    draw();
  }, {passive: false});
  let dragging = null;
  svg.addEventListener("mousedown", ev => { dragging = [ev.clientX, view.slice()]; });
  window.addEventListener("mouseup", () => { dragging = null; });
  window.addEventListener("mousemove", ev => {
    if (!dragging) return;
    const dt = (ev.clientX - dragging[0]) / (width() - LEFT - RIGHT) * (dragging[1][1] - dragging[1][0]);
    view = [dragging[1][0] - dt, dragging[1][1] - dt];
    draw();
  });
  svg.addEventListener("dblclick", () => { view = [0, end]; draw(); });
  window.addEventListener("resize", draw);
  draw();

  const failed = T.events.filter(e => e.failed).length;
  document.getElementById("summary").textContent =
    `${T.events.length} calls and batches on ${pids.length} processes over ${fmt(T.duration)}` +
    (failed ? `, ${failed} failed` : "") +
    (T.missing.length ? `; no records from pid ${T.missing.join(", ")}` : "") +
    ". Wheel: zoom, drag: pan, double click: reset; the dashed line is the last end (outlined bar).";
  const legend = document.getElementById("legend");
  const perFunction = new Map();
  for (const e of T.events) perFunction.set(e.function, (perFunction.get(e.function) || 0) + (e.end - e.start));
  for (const [name, total] of [...perFunction].sort((a, b) => b[1] - a[1])) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colors.get(name);
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(`${name}: ${fmt(total)}`));
    legend.appendChild(item);
  }
  const table = document.getElementById("workers");
  table.innerHTML = "<tr><th>process</th><th>calls</th><th>elements</th><th>busy</th><th>busy %</th>" +
                    "<th>last end</th><th>failed</th></tr>";
  for (const p of pids) {
    const mine = T.events.filter(e => e.pid === p).sort((a, b) => a.start - b.start);
    let busy = 0, reach = -Infinity;
    for (const e of mine) if (e.end > reach) { busy += e.end - Math.max(e.start, reach); reach = e.end; }
    const row = table.insertRow();
    if (p === straggler && pids.length > 1) row.className = "straggler";
    const cells = [p === 1 ? "1 (driver)" : p, mine.length, mine.reduce((a, e) => a + e.elements, 0), fmt(busy),
                   (100 * busy / Math.max(T.duration, 1e-9)).toFixed(0) + " %",
                   mine.length ? fmt(reach) : "", mine.filter(e => e.failed).length];
    for (const c of cells) row.insertCell().textContent = c;
  }
  document.body.dataset.drawn = String(rects.length);
})();
</script>
</body>
</html>
"""
