// The dashboard both pages share: a model of runs and their series, the run list, the
// controls, the curves (uPlot) and the spec differences. The browser page (browser.js) feeds it
// from the REST mirror and its event stream; the MCP App view (app.js) from tool results.
(function () {
  "use strict";

  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                   "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  const DASHES = [[], [6, 4], [2, 3], [10, 3, 2, 3]];
  const ACTIVE = new Set(["queued", "running"]);
  const STEP_METRIC = window.TM_CONFIG.stepMetric; // the server's name for the per-step loss
  const INTEGER_STEPS = [1, 2, 5].flatMap(k => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].map(p => k * p))
    .sort((a, b) => a - b); // epochs and steps are whole numbers: no 1.5 on the axis
  const SYSTEM = "system/"; // CPU, memory and GPU samples: their step is the sample time in ms
  // The system charts: one in percent, one in MB (a unit each, so neither squashes the other).
  const SYSTEM_CHARTS = [["percent", /(_percent|_util)$/, "%"], ["mb", /_mb$/, "MB"]];

  // TensorBoard's smoothing: an exponential moving average, debiased so the first points are
  // not pulled towards zero. Gaps (null: not finite or not stored) stay gaps.
  function ema(values, weight) {
    const out = new Array(values.length);
    let last = 0, n = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || v === undefined || !Number.isFinite(v)) { out[i] = null; continue; }
      last = last * weight + (1 - weight) * v;
      n += 1;
      const debias = weight === 1 ? 1 : 1 - Math.pow(weight, n);
      out[i] = last / debias;
    }
    return out;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "-";
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(+v.toPrecision(4));
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children || []) node.append(c);
    return node;
  }

  // A short line drawn with a metric's dash pattern, for the legend.
  function dashSample(dash) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    const line = document.createElementNS(ns, "line");
    const attrs = { x1: 0, y1: 4, x2: 28, y2: 4, stroke: "currentColor", "stroke-width": 2,
                    "stroke-dasharray": dash.join(" ") };
    for (const [k, v] of Object.entries({ width: 28, height: 8 })) svg.setAttribute(k, v);
    for (const [k, v] of Object.entries(attrs)) line.setAttribute(k, v);
    svg.append(line);
    return svg;
  }

  // One metric of one run: columnar, sorted by step.
  class Series {
    constructor() { this.steps = []; this.values = []; }
    replace(steps, values) { this.steps = steps.slice(); this.values = values.slice(); }
    append(steps, values) {
      for (let i = 0; i < steps.length; i++) {
        const last = this.steps.length ? this.steps[this.steps.length - 1] : -Infinity;
        if (steps[i] > last) { this.steps.push(steps[i]); this.values.push(values[i]); }
      }
    }
  }

  // A uPlot chart of (run, metric) curves over one x axis; raw and smoothed lines and a marker
  // at each run's best epoch. Exposes what it drew for tests and curious people.
  class Curves {
    constructor(root, xLabel, options) {
      this.root = root; this.xLabel = xLabel; this.plot = null; this.key = ""; this.drawn = null;
      this.options = options || {};
    }

    draw(lines, weight, markers) {
      const xs = [...new Set(lines.flatMap(l => l.series.steps))].sort((a, b) => a - b);
      const at = new Map(xs.map((x, i) => [x, i]));
      const data = [xs];
      const series = [{ label: this.xLabel }];
      const drawn = [];
      for (const line of lines) {
        const raw = new Array(xs.length).fill(null);
        line.series.steps.forEach((s, i) => { raw[at.get(s)] = line.series.values[i]; });
        const smooth = weight > 0 ? ema(raw, weight) : raw;
        const common = { spanGaps: true, points: { show: false } };
        if (weight > 0) {
          data.push(raw);
          series.push({ ...common, label: line.label + " (raw)", stroke: line.color + "44",
                        width: 1, dash: line.dash });
        }
        data.push(smooth);
        series.push({ ...common, label: line.label, stroke: line.color, width: 2, dash: line.dash });
        drawn.push({ run: line.run, metric: line.metric, raw: raw, values: smooth });
      }
      for (const m of markers) {
        const ys = new Array(xs.length).fill(null);
        if (at.has(m.step)) ys[at.get(m.step)] = m.value;
        data.push(ys);
        series.push({ label: m.label, stroke: m.color, width: 0, paths: () => null,
                      points: { show: true, size: 11, width: 2, stroke: m.color, fill: "#fff" } });
      }
      this.drawn = { xs: xs, lines: drawn, markers: markers.map(m => ({ run: m.run, step: m.step })) };
      // Axis text follows the page's theme (a host may switch it to dark).
      const ink = getComputedStyle(document.documentElement).getPropertyValue("--muted").trim();
      const key = ink + series.map(s => s.label + (s.stroke || "")).join("|");
      const width = Math.max(320, this.root.clientWidth || 600);
      if (!window.uPlot) return;
      if (this.plot && key === this.key) {
        this.plot.setData(data);
        return;
      }
      if (this.plot) this.plot.destroy();
      this.key = key;
      const x = { label: this.xLabel, stroke: ink };
      if (!this.options.realX) x.incrs = INTEGER_STEPS;
      this.plot = new window.uPlot({
        width: width, height: 280, series: series,
        scales: { x: { time: false } },
        axes: [x, { size: 60, stroke: ink, label: this.options.yLabel }],
        legend: { show: false }, // the compact legend below names runs and metrics once
        cursor: { drag: { x: true, y: false } },
      }, data, this.root);
    }

    resize() {
      if (this.plot) this.plot.setSize({ width: Math.max(320, this.root.clientWidth), height: 280 });
    }
  }

  // The whole view. `hooks`: onSelect(id, on), onStop(id), onReload() (metrics asked changed),
  // onSteps(on), and onSystem(on) where the page can read `system/` series (it then offers
  // them). `options.selectable`: the run list has checkboxes; `options.offerStored`: offer
  // every metric the run stored (both the browser page's).
  class Dashboard {
    constructor(root, hooks, options) {
      this.hooks = hooks; this.options = options || {};
      this.runs = new Map();      // id -> {operation_id, name, status, epochs_done, ...}
      this.indicators = new Map(); // id -> indicators
      this.data = new Map();      // id -> Map(metric -> Series)
      this.selected = [];
      this.metrics = new Set(["train_loss", "val_loss"]);
      this.available = new Set();
      this.weight = 0.6;
      this.showSteps = false;
      this.showSystem = false;
      this.differences = [];
      this.pending = false;
      this.build(root);
    }

    build(root) {
      this.message = el("div", { class: "message", role: "status", id: "message" });
      this.table = el("tbody");
      this.metricBox = el("span", { class: "metrics", id: "metric-toggles" });
      this.smoothing = el("input", { type: "range", min: "0", max: "0.99", step: "0.01",
                                     value: String(this.weight), id: "smoothing",
                                     "aria-label": "smoothing" });
      this.smoothingValue = el("output", { id: "smoothing-value", text: this.weight.toFixed(2) });
      this.smoothing.addEventListener("input", () => {
        this.weight = Number(this.smoothing.value);
        this.smoothingValue.textContent = this.weight.toFixed(2);
        this.render();
      });
      this.chartBox = el("div", { class: "chart", id: "chart" });
      this.legend = el("div", { class: "legend", id: "legend" });
      this.stepsChartBox = el("div", { class: "chart", id: "steps-chart" });
      this.stepsBox = el("section", { hidden: true }, [el("h2", { text: "Per-step training loss" }),
                                                       this.stepsChartBox]);
      const steps = this.revealer("show-steps", this.stepsBox, "showSteps", this.hooks.onSteps);
      this.systemCurves = {};
      this.systemLegends = {};
      const systemCharts = SYSTEM_CHARTS.flatMap(([unit, , label]) => {
        const box = el("div", { class: "chart", id: "system-" + unit + "-chart" });
        this.systemCurves[unit] = new Curves(box, "seconds since the run's first sample",
                                             { realX: true, yLabel: label });
        this.systemLegends[unit] = el("div", { class: "legend", id: "system-" + unit + "-legend" });
        return [box, this.systemLegends[unit]];
      });
      this.systemBox = el("section", { id: "system", hidden: true }, [
        el("h2", { text: "System: CPU, memory, GPU" }),
        el("p", { class: "note", text: "cpu_percent: 100 = one core busy; host_cpu_percent: " +
                                       "100 = every core; memory in MB below." }),
        ...systemCharts]);
      const system = this.revealer("show-system", this.systemBox, "showSystem",
                                   this.hooks.onSystem);
      this.diffBox = el("section", { id: "differences", hidden: true });
      const charts = window.TM_CONFIG.chartsMissing
        ? el("p", { class: "missing", id: "charts-missing", text: window.TM_CONFIG.chartsMissing })
        : this.chartBox;
      root.append(
        this.message,
        el("table", { class: "runs", id: "runs" }, [
          el("thead", {}, [el("tr", {}, ["", "run", "status", "progress", "best", "verdict",
                                         "recommendation", ""].map(t => el("th", { text: t })))]),
          this.table]),
        el("div", { class: "controls" }, [
          this.metricBox,
          el("label", {}, ["smoothing ", this.smoothing, " ", this.smoothingValue]),
          el("label", {}, [steps, " per-step loss"]),
          ...(this.hooks.onSystem ? [el("label", {}, [system, " system"])] : [])]),
        charts, this.legend, this.stepsBox, this.systemBox, this.diffBox);
      this.curves = new Curves(this.chartBox, "epoch");
      this.stepCurves = new Curves(this.stepsChartBox, "step");
      window.addEventListener("resize", () => {
        this.curves.resize(); this.stepCurves.resize();
        Object.values(this.systemCurves).forEach(c => c.resize());
      });
    }

    // A checkbox that shows `box` while it is checked, keeps `this[flag]` and tells `hook`.
    revealer(id, box, flag, hook) {
      const input = el("input", { type: "checkbox", id: id });
      input.addEventListener("change", () => {
        this[flag] = input.checked;
        box.hidden = !input.checked;
        hook(input.checked);
        this.render();
      });
      return input;
    }

    say(text, kind) {
      this.message.textContent = text || "";
      this.message.className = "message" + (kind ? " " + kind : "");
    }

    upsertRun(info) {
      const old = this.runs.get(info.operation_id) || {};
      this.runs.set(info.operation_id, { ...old, ...info });
      this.render();
    }

    setIndicators(id, indicators) { if (indicators) this.indicators.set(id, indicators); this.render(); }

    series(id, name) {
      if (!this.data.has(id)) this.data.set(id, new Map());
      const runData = this.data.get(id);
      if (!runData.has(name)) runData.set(name, new Series());
      if (name !== STEP_METRIC && !name.startsWith(SYSTEM)) this.available.add(name);
      return runData.get(name);
    }

    // A metrics read (the REST answer or a snapshot's run): replace or append its series.
    applyRead(id, read, replace) {
      for (const s of read.series) {
        const target = this.series(id, s.name);
        if (replace) target.replace(s.steps, s.values); else target.append(s.steps, s.values);
      }
      // The browser page reads every metric, so it offers every stored name; the App view reads
      // the default few and offers only those it has.
      if (this.options.offerStored) {
        // `system/` (CPU, memory, GPU over time) is not an epoch curve: its own charts.
        for (const name of read.available || []) {
          if (name !== STEP_METRIC && !name.startsWith(SYSTEM)) this.available.add(name);
        }
      }
      const run = this.runs.get(id) || { operation_id: id, name: id };
      this.runs.set(id, { ...run, status: read.status, epochs_done: read.epochs_done,
                          epochs_total: read.epochs_total });
      if (read.indicators) this.indicators.set(id, read.indicators);
      this.render();
    }

    // How many points of (run, metric) the chart has drawn (not just received).
    drawnPoints(id, name) {
      const drawn = this.curves.drawn;
      const line = drawn && drawn.lines.find(l => l.run === id && l.metric === name);
      return line ? line.raw.filter(v => v !== null).length : 0;
    }

    points(id, name) { const s = this.data.get(id) && this.data.get(id).get(name); return s ? s.steps.length : 0; }

    forget(id) { this.data.delete(id); this.render(); }

    select(ids) { this.selected = ids.slice(); this.render(); }

    setDifferences(list) { this.differences = list || []; this.render(); }

    // Drawing is batched to one per frame however fast epochs arrive.
    render() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }

    draw() {
      this.drawRuns();
      this.drawMetricToggles();
      const lines = [], markers = [], stepLines = [];
      this.selected.forEach((id, k) => {
        const color = PALETTE[k % PALETTE.length];
        const run = this.runs.get(id) || { name: id };
        const runData = this.data.get(id) || new Map();
        [...this.metrics].forEach((m, j) => {
          const s = runData.get(m);
          if (s) lines.push({ run: id, metric: m, series: s, color: color,
                              dash: DASHES[j % DASHES.length], label: run.name + " " + m });
        });
        const ind = this.indicators.get(id);
        const monitored = ind && runData.get(ind.monitor);
        if (ind && ind.best_epoch !== null && monitored && this.metrics.has(ind.monitor)) {
          const i = monitored.steps.indexOf(ind.best_epoch);
          const value = i >= 0 ? monitored.values[i] : ind.best_value;
          markers.push({ run: id, step: ind.best_epoch, value: value, color: color,
                         label: run.name + " best " + ind.monitor + " @" + ind.best_epoch });
        }
        const steps = runData.get(STEP_METRIC);
        if (steps) stepLines.push({ run: id, metric: STEP_METRIC, series: steps, color: color,
                                    dash: [], label: run.name + " step loss" });
      });
      this.curves.draw(lines, this.weight, markers);
      this.drawLegend();
      if (this.showSteps) this.stepCurves.draw(stepLines, this.weight, []);
      if (this.showSystem) this.drawSystem();
      this.drawDifferences();
    }

    // Each selected run's system series against seconds since its own first sample (so runs
    // overlay), drawn unsmoothed: a spike is what one wants to see.
    drawSystem() {
      const lines = Object.fromEntries(SYSTEM_CHARTS.map(([unit]) => [unit, []]));
      this.selected.forEach((id, k) => {
        const run = this.runs.get(id) || { name: id };
        const system = [...(this.data.get(id) || new Map()).entries()]
          .filter(([name, s]) => name.startsWith(SYSTEM) && s.steps.length).sort();
        const t0 = Math.min(...system.map(([, s]) => s.steps[0]));
        system.forEach(([name, s], j) => {
          const chart = SYSTEM_CHARTS.find(([, pattern]) => pattern.test(name));
          if (!chart) return;
          const series = new Series();
          series.replace(s.steps.map(t => (t - t0) / 1000), s.values);
          lines[chart[0]].push({ run: id, metric: name, series: series,
                                 color: PALETTE[k % PALETTE.length],
                                 dash: DASHES[j % DASHES.length],
                                 label: run.name + " " + name.slice(SYSTEM.length) });
        });
      });
      for (const [unit] of SYSTEM_CHARTS) {
        this.systemCurves[unit].draw(lines[unit], 0, []);
        this.systemLegends[unit].replaceChildren(...lines[unit].map(line => el("span", { class: "key" }, [
          el("i", { style: "background:" + line.color }), dashSample(line.dash), line.label])));
      }
    }

    // Rows are made once per run and updated in place: a button replaced while epochs stream
    // in would lose the click that landed on it.
    drawRuns() {
      this.rows = this.rows || new Map();
      const order = [];
      for (const run of this.runs.values()) {
        const id = run.operation_id;
        let row = this.rows.get(id);
        if (!row) { row = this.makeRow(id); this.rows.set(id, row); }
        const ind = this.indicators.get(id);
        const on = this.selected.includes(id);
        const total = run.epochs_total || 0;
        const done = run.epochs_done || 0;
        row.tr.className = on ? "selected" : "";
        row.box.checked = on;
        row.name.textContent = run.name || id;
        row.status.textContent = run.status || "?";
        row.status.className = "badge status-" + run.status;
        row.progress.value = total ? Math.min(100, Math.round(100 * done / total)) : 0;
        row.count.textContent = ` ${done}/${total || "?"}`;
        row.best.textContent = ind && ind.best_epoch !== null ? `${fmt(ind.best_value)} @${ind.best_epoch}` : "-";
        row.verdict.hidden = row.rec.hidden = !ind;
        if (ind) {
          row.verdict.textContent = ind.verdict;
          row.verdict.className = "badge verdict-" + ind.verdict;
          row.rec.textContent = ind.recommendation;
        }
        row.stop.hidden = !ACTIVE.has(run.status);
        order.push(row.tr);
      }
      const current = [...this.table.children];
      if (current.length !== order.length || current.some((tr, i) => tr !== order[i])) {
        this.table.replaceChildren(...order);
      }
    }

    makeRow(id) {
      const row = {
        box: el("input", { type: "checkbox", "aria-label": "select " + id }),
        name: el("span", { class: "name" }),
        status: el("span", { class: "badge" }),
        progress: el("progress", { max: "100", value: "0" }),
        count: document.createTextNode(""),
        best: el("td"),
        verdict: el("span", { class: "badge" }),
        rec: el("span", { class: "badge rec" }),
        stop: el("button", { class: "stop", "data-run": id, text: "stop",
                             onclick: () => this.hooks.onStop(id) }),
      };
      row.box.addEventListener("change", () => this.hooks.onSelect(id, row.box.checked));
      row.tr = el("tr", { "data-run": id }, [
        el("td", {}, this.options.selectable ? [row.box] : []),
        el("td", {}, [row.name, " ", el("code", { text: id })]),
        el("td", {}, [row.status]),
        el("td", {}, [row.progress, row.count]),
        row.best,
        el("td", {}, [row.verdict]),
        el("td", {}, [row.rec]),
        el("td", {}, [row.stop]),
      ]);
      return row;
    }

    drawLegend() {
      const runs = this.selected.map((id, k) => el("span", { class: "key" }, [
        el("i", { style: "background:" + PALETTE[k % PALETTE.length] }),
        (this.runs.get(id) || {}).name || id]));
      const metrics = [...this.metrics].map((m, j) => el("span", { class: "key" }, [
        dashSample(DASHES[j % DASHES.length]), m]));
      const best = el("span", { class: "key" }, [el("b", { class: "ring" }), "best epoch"]);
      const faint = this.weight > 0 ? [el("span", { class: "key muted", text: "faint: unsmoothed" })] : [];
      this.legend.replaceChildren(...runs, ...metrics, best, ...faint);
    }

    drawMetricToggles() {
      const names = [...new Set([...this.available, ...this.metrics])].sort();
      const key = names.join(",") + "|" + [...this.metrics].join(",");
      if (this.metricBox.dataset.key === key) return;
      this.metricBox.dataset.key = key;
      this.metricBox.replaceChildren(...names.map(name => {
        const box = el("input", { type: "checkbox", checked: this.metrics.has(name), value: name });
        box.addEventListener("change", () => {
          if (box.checked) this.metrics.add(name); else this.metrics.delete(name);
          this.render();
        });
        return el("label", {}, [box, " " + name]);
      }));
    }

    drawDifferences() {
      const ids = this.selected;
      this.diffBox.hidden = ids.length < 2;
      if (ids.length < 2) return;
      const head = el("tr", {}, [el("th", { text: "spec field" }),
                                 ...ids.map(id => el("th", { text: (this.runs.get(id) || {}).name || id }))]);
      const rows = this.differences.map(d => el("tr", {}, [
        el("td", {}, [el("code", { text: d.path })]),
        ...ids.map(id => el("td", { text: JSON.stringify(d.values[id] === undefined ? null : d.values[id]) }))]));
      this.diffBox.replaceChildren(
        el("h2", { text: "Spec differences" }),
        rows.length ? el("table", { class: "diffs" }, [el("thead", {}, [head]), el("tbody", {}, rows)])
                    : el("p", { text: "The selected runs' specs are identical." }));
    }
  }

  window.TM = { ema: ema, Dashboard: Dashboard, ACTIVE: ACTIVE, STEP_METRIC: STEP_METRIC,
                SYSTEM: SYSTEM };
})();
