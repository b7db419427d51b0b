// The browser page: runs and curves from the REST mirror (/api/v1), kept live by each selected
// run's event stream. The bearer token, when the server wants one, is asked for and kept in
// sessionStorage only (gone when the tab closes).
(function () {
  "use strict";
  const API = "/api/v1";
  const KEY = "training-mcp-token";
  const POINTS = 500;        // per metric per read: the server downsamples longer series
  const REFETCH_PAST = 4 * POINTS; // a stream that appended this many gets a fresh downsampled read
  const $ = id => document.getElementById(id);
  const streams = new Map(); // id -> AbortController

  let token = sessionStorage.getItem(KEY);

  class Unauthorized extends Error {}

  async function api(path, init) {
    const headers = Object.assign({ Accept: "application/json" }, (init || {}).headers);
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(API + path, Object.assign({}, init, { headers: headers }));
    if (response.status === 401) { askToken(); throw new Unauthorized("token required"); }
    return response;
  }

  async function json(path, init) {
    const response = await api(path, init);
    const body = response.status === 204 ? null : await response.json();
    if (!response.ok) throw new Error((body && body.error && body.error.message) || response.statusText);
    return body;
  }

  function askToken() {
    $("token-form").hidden = false;
    $("forget-token").hidden = true;
    $("token").focus();
  }

  const dash = new window.TM.Dashboard($("dashboard"), {
    onSelect: (id, on) => (on ? select(id) : unselect(id)),
    onStop: stop,
    onSteps: on => { if (on) dash.selected.forEach(loadSteps); },
    onSystem: on => { if (on) dash.selected.forEach(loadSystem); },
  }, { selectable: true, offerStored: true });
  window.TM.dashboard = dash;

  async function loadRuns() {
    const list = await json("/operations?limit=50");
    for (const op of list.operations) dash.upsertRun(op);
    const wanted = location.pathname.startsWith("/runs/")
      ? decodeURIComponent(location.pathname.slice(6)) : null;
    return { list: list, wanted: wanted };
  }

  async function loadBadges(ops) {
    for (const op of ops) {
      try {
        const read = await json(`/operations/${op.operation_id}/metrics?metrics=train_loss&last_epochs=1&max_points=4`);
        dash.setIndicators(op.operation_id, read.indicators);
      } catch (e) { if (e instanceof Unauthorized) return; }
    }
  }

  async function loadMetrics(id) {
    const read = await json(`/operations/${id}/metrics?metrics=all&max_points=${POINTS}`);
    dash.applyRead(id, read, true);
    if (dash.showSteps) await loadSteps(id);
    if (dash.showSystem) await loadSystem(id);
    return read;
  }

  // Samples come every --system-interval (10 s): read again at most that often while it runs.
  const systemReadAt = new Map();
  async function loadSystem(id) {
    systemReadAt.set(id, Date.now());
    const read = await json(`/operations/${id}/metrics?metrics=${encodeURIComponent(window.TM.SYSTEM)}&max_points=1000`);
    if (read.series.length) dash.applyRead(id, read, true);
  }

  async function loadSteps(id) {
    const read = await json(`/operations/${id}/metrics?metrics=${encodeURIComponent(window.TM.STEP_METRIC)}&max_points=1000`);
    if (read.series.length) dash.applyRead(id, read, true);
  }

  async function select(id) {
    if (!dash.selected.includes(id)) dash.select([...dash.selected, id].slice(-10));
    try {
      const read = await loadMetrics(id);
      const match = /^e(-?\d+)/.exec(read.next_cursor);
      follow(id, Math.max(0, match ? Number(match[1]) : 0));
    } catch (e) { if (!(e instanceof Unauthorized)) dash.say(String(e.message || e), "error"); }
    compare();
  }

  function unselect(id) {
    dash.select(dash.selected.filter(x => x !== id));
    const stream = streams.get(id);
    if (stream) { stream.abort(); streams.delete(id); }
    compare();
  }

  async function compare() {
    if (dash.selected.length < 2) { dash.setDifferences([]); return; }
    try {
      const c = await json("/compare?operation_ids=" + dash.selected.map(encodeURIComponent).join(","));
      dash.setDifferences(c.differences);
    } catch (e) { if (!(e instanceof Unauthorized)) dash.say(String(e.message || e), "error"); }
  }

  // The run's event stream, read with fetch (EventSource cannot send the token), from the
  // epoch the metrics read ended at. Reconnects with the last event id until the run has ended.
  async function follow(id, epoch) {
    const control = new AbortController();
    const old = streams.get(id);
    if (old) old.abort();
    streams.set(id, control);
    let lastId = "e" + epoch, appended = 0, stepsAt = 0;
    while (!control.signal.aborted) {
      let response;
      try {
        response = await api(`/operations/${id}/events`, {
          headers: { Accept: "text/event-stream", "Last-Event-ID": lastId }, signal: control.signal });
      } catch (e) { if (e instanceof Unauthorized || control.signal.aborted) return; }
      if (response && response.status === 204) return;
      if (response && response.ok) {
        let ended = false;
        try {
          for await (const ev of events(response)) {
            if (ev.id) lastId = ev.id;
            const data = JSON.parse(ev.data);
            if (ev.event === "epoch") {
              for (const [name, value] of Object.entries(data.values)) {
                dash.series(id, name).append([data.epoch], [value]);
              }
              dash.upsertRun({ operation_id: id, epochs_done: data.epochs_done,
                               epochs_total: data.epochs_total, status: data.status });
              appended += 1;
              if (dash.showSteps && Date.now() - stepsAt > 1000) { stepsAt = Date.now(); loadSteps(id); }
              if (dash.showSystem && Date.now() - (systemReadAt.get(id) || 0) > 10000) loadSystem(id);
              if (appended > REFETCH_PAST) { appended = 0; await loadMetrics(id); }
            } else if (ev.event === "status") {
              dash.upsertRun(data);
              ended = window.TM.ACTIVE.has(data.status) === false;
              // the verdict may have changed: one small read for the badges
              const read = await json(`/operations/${id}/metrics?metrics=train_loss&last_epochs=1&max_points=4`);
              dash.setIndicators(id, read.indicators);
            }
          }
        } catch (e) { if (control.signal.aborted) return; }
        if (ended) { loadMetrics(id); return; }
      }
      await new Promise(r => setTimeout(r, 2000));
    }
  }

  async function* events(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const fields = {};
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const k = i < 0 ? line : line.slice(0, i);
          fields[k] = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        }
        if ("data" in fields) yield { id: fields.id, event: fields.event || "message", data: fields.data };
      }
    }
  }

  async function stop(id) {
    try {
      const op = await json(`/operations/${id}/cancel`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason: "stopped from the dashboard" }) });
      dash.upsertRun(op);
      dash.say(`Stopped ${id}.`, "ok");
    } catch (e) {
      dash.say(e instanceof Unauthorized
        ? "Stop refused: this server needs its token. Enter it above and press stop again."
        : "Stop failed: " + (e.message || e), "error");
    }
  }

  async function refresh() {
    try {
      const { list } = await loadRuns();
      const active = list.operations.filter(op => window.TM.ACTIVE.has(op.status));
      await loadBadges(active);
    } catch (e) { /* shown by the next successful refresh or the token form */ }
    setTimeout(refresh, 5000);
  }

  async function start() {
    try {
      const { list, wanted } = await loadRuns();
      $("token-form").hidden = true;
      if (!list.operations.length) dash.say("No runs yet: start one with start_training or POST /api/v1/operations.");
      const first = wanted || (list.operations[0] && list.operations[0].operation_id);
      if (first) await select(first);
      await loadBadges(list.operations);
      setTimeout(refresh, 5000);
    } catch (e) {
      if (!(e instanceof Unauthorized)) dash.say(String(e.message || e), "error");
    }
  }

  $("token-form").addEventListener("submit", ev => {
    ev.preventDefault();
    token = $("token").value.trim() || null;
    if (token) sessionStorage.setItem(KEY, token); else sessionStorage.removeItem(KEY);
    $("token").value = "";
    $("forget-token").hidden = !token;
    if (!dash.runs.size) start(); else { $("token-form").hidden = true; dash.say("Token set.", "ok"); }
  });
  $("forget-token").addEventListener("click", () => {
    token = null;
    sessionStorage.removeItem(KEY);
    $("forget-token").hidden = true;
    dash.say("Token forgotten for this tab.");
  });
  $("forget-token").hidden = !token;
  start();
})();
