// The MCP App view: JSON-RPC 2.0 with the host over postMessage (MCP Apps, 2026-01-26).
// It draws the runs of the tool result it is given, then keeps them live by calling the
// view-only tool dashboard_updates through the host; stop calls stop_training. No network:
// every byte comes through the host.
(function () {
  "use strict";
  const PROTOCOL = "2026-01-26";
  const POLL_MS = 2000;
  const POINTS = 500;
  const REFETCH_PAST = 4 * POINTS;
  let nextId = 1;
  const pending = new Map();
  let ids = null;          // the runs shown, from the tool input or result
  let cursors = {};        // id -> next_cursor of the last read
  let appended = 0;        // points appended since the last whole read
  let timer = null, closed = false, polling = false;

  function post(message) { window.parent.postMessage(Object.assign({ jsonrpc: "2.0" }, message), "*"); }

  function request(method, params) {
    const id = nextId++;
    post({ id: id, method: method, params: params || {} });
    return new Promise((resolve, reject) => pending.set(id, { resolve: resolve, reject: reject }));
  }

  function notify(method, params) { post({ method: method, params: params || {} }); }

  async function callTool(name, args) {
    const result = await request("tools/call", { name: name, arguments: args });
    if (result.isError) {
      const text = (result.content || []).map(c => c.text || "").join(" ");
      throw new Error(text || name + " failed");
    }
    return result;
  }

  const dash = new window.TM.Dashboard(document.getElementById("dashboard"), {
    onSelect: () => {},
    onStop: stop,
    onSteps: () => reload(),
  }, { selectable: false });
  window.TM.dashboard = dash;

  function apply(snapshot, whole) {
    if (whole) { cursors = {}; appended = 0; }
    ids = snapshot.runs.map(r => r.metrics.operation_id);
    for (const run of snapshot.runs) {
      const m = run.metrics;
      dash.upsertRun({ operation_id: m.operation_id, name: run.name, reason: run.reason });
      dash.applyRead(m.operation_id, m, whole);
      cursors[m.operation_id] = m.next_cursor;
      if (!whole) appended += m.series.reduce((n, s) => n + s.returned_points, 0);
    }
    if (whole) dash.setDifferences(snapshot.differences);
    dash.select(ids);
    schedule(snapshot.active);
  }

  function schedule(active) {
    clearTimeout(timer);
    if (active && !closed) timer = setTimeout(poll, POLL_MS);
  }

  async function reload() {
    if (!ids) return;
    try {
      const result = await callTool("dashboard_updates", {
        operation_ids: ids, max_points: POINTS, include_steps: dash.showSteps });
      apply(result.structuredContent, true);
    } catch (e) { dash.say(String(e.message || e), "error"); }
  }

  async function poll() {
    if (polling || closed || !ids) return;
    polling = true;
    try {
      if (appended > REFETCH_PAST) { polling = false; return reload(); }
      const result = await callTool("dashboard_updates", {
        operation_ids: ids, cursors: cursors, max_points: POINTS, include_steps: dash.showSteps });
      apply(result.structuredContent, false);
    } catch (e) {
      dash.say(String(e.message || e), "error");
      schedule(true);
    } finally { polling = false; }
  }

  async function stop(id) {
    try {
      const result = await callTool("stop_training", { operation_id: id, reason: "stopped from the dashboard" });
      const op = result.structuredContent;
      if (op) dash.upsertRun(op);
      dash.say(`Stopped ${id}.`, "ok");
      poll();
    } catch (e) { dash.say("Stop failed: " + (e.message || e), "error"); }
  }

  function onToolInput(params) {
    const args = (params && params.arguments) || {};
    if (Array.isArray(args.operation_ids) && args.operation_ids.length) ids = args.operation_ids;
  }

  function onToolResult(result) {
    if (result.isError) {
      dash.say((result.content || []).map(c => c.text || "").join(" ") || "the tool failed", "error");
      return;
    }
    const data = result.structuredContent;
    if (data && Array.isArray(data.runs)) apply(data, true);
    else reload(); // plot_metrics: its result is a PNG; read the curves for its runs
  }

  function theme(context) {
    if (!context) return;
    document.documentElement.classList.toggle("dark", context.theme === "dark");
    dash.render();
  }

  window.addEventListener("message", event => {
    if (event.source !== window.parent) return;
    const msg = event.data;
    if (!msg || msg.jsonrpc !== "2.0") return;
    if (msg.id !== undefined && !msg.method) {
      const waiter = pending.get(msg.id);
      if (!waiter) return;
      pending.delete(msg.id);
      if (msg.error) waiter.reject(new Error(msg.error.message)); else waiter.resolve(msg.result);
      return;
    }
    switch (msg.method) {
      case "ui/notifications/tool-input": onToolInput(msg.params); break;
      case "ui/notifications/tool-result": onToolResult(msg.params || {}); break;
      case "ui/notifications/tool-cancelled": dash.say("The tool call was cancelled."); break;
      case "ui/notifications/host-context-changed": theme(msg.params); break;
      case "ui/resource-teardown":
        closed = true;
        clearTimeout(timer);
        post({ id: msg.id, result: {} });
        break;
      default:
        if (msg.id !== undefined) post({ id: msg.id, error: { code: -32601, message: "unknown method " + msg.method } });
    }
  });

  // The host sizes the frame to what the view reports.
  let lastSize = "";
  new ResizeObserver(() => {
    const size = { width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight };
    const key = size.width + "x" + size.height;
    if (key !== lastSize) { lastSize = key; notify("ui/notifications/size-changed", size); }
  }).observe(document.documentElement);

  (async function start() {
    try {
      const init = await request("ui/initialize", {
        appInfo: { name: "training-mcp dashboard", version: "1" },
        appCapabilities: {},
        protocolVersion: PROTOCOL,
      });
      theme(init && init.hostContext);
      notify("ui/notifications/initialized", {});
    } catch (e) { dash.say("The host did not initialise the view: " + (e.message || e), "error"); }
  })();
})();
