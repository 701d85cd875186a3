// itpump dashboard: live rows, pump charts, controls that call the control API.
// Plain browser JavaScript, no build step; charts by uPlot (vendored, MIT).
"use strict";

(function () {
  const page = document.body.dataset.page;
  const state = { messages: 0, view: null, rows: new Map(), charts: {}, calls: 0 };
  window.itpumpDashboard = state; // read by the browser tests and handy in the console

  const $ = (sel) => document.querySelector(sel);
  const fmt = (v, digits, unit) =>
    v === null || v === undefined ? "—" : Number(v).toFixed(digits) + (unit || "");
  const signed = (v, digits, unit) =>
    v === null || v === undefined ? "—" : (v >= 0 ? "+" : "") + Number(v).toFixed(digits) + (unit || "");
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // ------------------------------------------------------------------ API calls, shown
  function curl(method, path, body) {
    const base = location.origin;
    let text = "curl -s";
    if (method !== "GET") text += " -X " + method;
    text += " " + base + path;
    if (body !== undefined) text += " -H 'content-type: application/json' -d '" + JSON.stringify(body) + "'";
    return text;
  }

  async function api(method, path, body) {
    const init = { method: method, headers: {} };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const li = document.createElement("li");
    li.innerHTML = "<code class='req'></code> <span class='status'>…</span><pre class='res'></pre><code class='curl'></code>";
    li.querySelector(".req").textContent = method + " " + path + (body !== undefined ? " " + JSON.stringify(body) : "");
    li.querySelector(".curl").textContent = curl(method, path, body);
    const list = $("#calls");
    list.prepend(li);
    while (list.children.length > 20) list.lastElementChild.remove();
    let response, text;
    try {
      response = await fetch(path, init);
      text = await response.text();
    } catch (err) {
      li.querySelector(".status").textContent = "failed: " + err;
      li.classList.add("error");
      throw err;
    }
    li.querySelector(".status").textContent = "→ " + response.status;
    li.classList.toggle("error", !response.ok);
    li.querySelector(".res").textContent = text.length > 600 ? text.slice(0, 599) + "…" : text;
    state.calls += 1;
    document.body.dataset.calls = String(state.calls);
    return response.ok ? JSON.parse(text) : null;
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-api]");
    if (!button) return;
    const [method, path] = button.dataset.api.split(" ");
    let body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    if (button.dataset.fault) {
      body = { kind: button.dataset.fault };
      const raw = $("#fault-value") ? $("#fault-value").value.trim() : "";
      if (raw !== "" && button.dataset.takesValue) body.value = Number(raw);
    }
    api(method, path, body).then((answer) => {
      if (answer && button.id === "snapshot") addSnapshot(answer);
    });
  });

  const speedButton = $("#set-speed");
  if (speedButton) {
    speedButton.addEventListener("click", () => {
      const raw = $("#speed").value;
      api("POST", "/clock/speed", { speed: raw === "max" ? "max" : Number(raw) });
    });
  }

  // ------------------------------------------------------------------ clock, live status
  function showClock(clock) {
    $("#clock-t").textContent = clock.t_h.toFixed(3);
    $("#clock-d").textContent = (clock.t_h / 24).toFixed(2);
    $("#clock-speed").textContent = clock.stepped ? "stepped" : String(clock.speed);
    // The speed list keeps the user's choice until "Set speed": a live update must not change
    // what is about to be sent.
  }

  function setLive(text, kind) {
    const live = $("#live");
    live.textContent = text;
    live.dataset.state = kind;
  }

  // ------------------------------------------------------------------ overview
  const CELLS = {
    t_h: (r) => fmt(r.t_h, 3),
    therapy: (r) => r.therapy,
    alarms: (r) => (r.alarm_count ? "⚠ " + r.alarms.join(", ") : "none"),
    reservoir_reported_ml: (r) => fmt(r.reservoir_reported_ml, 3),
    reservoir_true_ml: (r) => fmt(r.reservoir_true_ml, 3),
    reservoir_gap_ml: (r) => signed(r.reservoir_gap_ml, 3),
    battery_pct: (r) => fmt(r.battery_pct, 1),
    faults: (r) => (r.faults.length ? r.faults.join(", ") : "none") + (r.head_placed ? "" : " · head lifted"),
  };
  let sortKey = "serial";
  let sortDesc = false;

  function rowText(r) {
    return [r.serial, r.model, r.url, r.therapy].concat(r.alarms, r.faults).join(" ").toLowerCase();
  }

  function applyFilter() {
    const words = $("#filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const tr of $("#pumps tbody").rows) {
      const row = state.rows.get(tr.dataset.serial);
      const text = row ? rowText(row) : "";
      const ok = words.every((w) => text.includes(w));
      tr.hidden = !ok;
      if (ok) shown += 1;
    }
    $("#filter-count").textContent = words.length ? shown + " of " + state.rows.size + " shown" : "";
  }

  function applySort() {
    const body = $("#pumps tbody");
    const trs = Array.from(body.rows);
    const value = (tr) => state.rows.get(tr.dataset.serial)[sortKey];
    trs.sort((a, b) => {
      const va = value(a), vb = value(b);
      if (va === null || va === undefined) return vb === null || vb === undefined ? 0 : 1;
      if (vb === null || vb === undefined) return -1;
      const c = va < vb ? -1 : va > vb ? 1 : 0;
      return (sortDesc ? -c : c) || (a.dataset.serial < b.dataset.serial ? -1 : 1);
    });
    for (const tr of trs) body.appendChild(tr);
    for (const th of document.querySelectorAll("#pumps thead th")) {
      const b = th.querySelector("button[data-sort]");
      if (b && b.dataset.sort === sortKey) th.setAttribute("aria-sort", sortDesc ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    }
  }

  function updateRowCells(container, row) {
    for (const [key, render] of Object.entries(CELLS)) {
      const cell = container.querySelector('[data-c="' + key + '"]');
      if (!cell) continue;
      const text = render(row);
      if (cell.textContent !== text) cell.textContent = text;
      if (key === "alarms") cell.classList.toggle("alarm", row.alarm_count > 0);
      if (key === "reservoir_gap_ml") cell.classList.toggle("gap", Math.abs(row.reservoir_gap_ml || 0) >= 0.1);
    }
  }

  function showSummary(summary) {
    for (const [k, v] of Object.entries(summary)) {
      const el = document.querySelector('#summary [data-k="' + k + '"]');
      if (el) el.textContent = String(v);
    }
  }

  function onRows(payload) {
    if (payload.summary && $("#summary")) showSummary(payload.summary);
    if (page === "overview") {
      for (const row of payload.rows) {
        state.rows.set(row.serial, row);
        const tr = document.querySelector('#pumps tbody tr[data-serial="' + CSS.escape(row.serial) + '"]');
        if (tr) updateRowCells(tr, row);
      }
      if (sortKey !== "serial") applySort();
      applyFilter();
    } else if (page === "pump") {
      const mine = payload.rows.find((r) => r.serial === state.serial);
      if (mine) showStatus(mine);
    }
  }

  if (page === "overview") {
    for (const row of JSON.parse($("#initial-rows").textContent)) state.rows.set(row.serial, row);
    $("#filter").addEventListener("input", applyFilter);
    for (const b of document.querySelectorAll("button[data-sort]")) {
      b.addEventListener("click", () => {
        if (sortKey === b.dataset.sort) sortDesc = !sortDesc;
        else { sortKey = b.dataset.sort; sortDesc = false; }
        applySort();
      });
    }
  }

  // ------------------------------------------------------------------ one pump
  function showStatus(row) {
    const dl = $("#status");
    const text = {
      t_h: fmt(row.t_h, 3, " h"),
      therapy: row.therapy,
      alarms: CELLS.alarms(row),
      reservoir_reported_ml: fmt(row.reservoir_reported_ml, 3, " mL"),
      reservoir_true_ml: fmt(row.reservoir_true_ml, 3, " mL"),
      reservoir_gap_ml: signed(row.reservoir_gap_ml, 3, " mL"),
      battery_pct: fmt(row.battery_pct, 1, " %"),
      faults: row.faults.length ? row.faults.join(", ") : "none",
      head_placed: row.head_placed ? "placed" : "lifted",
    };
    for (const [k, v] of Object.entries(text)) {
      const dd = dl.querySelector('[data-c="' + k + '"]');
      if (dd && dd.textContent !== v) dd.textContent = v;
    }
    dl.querySelector('[data-c="alarms"]').classList.toggle("alarm", row.alarm_count > 0);
    dl.querySelector('[data-c="reservoir_gap_ml"]').classList.toggle("gap", Math.abs(row.reservoir_gap_ml || 0) >= 0.1);
  }

  function chartWidth(el) {
    return Math.max(280, Math.min(el.clientWidth || 600, 900) - 8);
  }

  function bandPlugin(getBand) {
    // Shades a documented concentration range behind the lines.
    return {
      hooks: {
        drawClear: (u) => {
          const band = getBand();
          if (!band) return;
          const ctx = u.ctx;
          const top = u.valToPos(Math.min(band.high, u.scales.y.max), "y", true);
          const bottom = u.valToPos(Math.max(band.low, u.scales.y.min), "y", true);
          if (!(bottom > top)) return;
          ctx.save();
          ctx.fillStyle = "rgba(0, 158, 115, 0.12)"; // bluish green, light
          ctx.fillRect(u.bbox.left, top, u.bbox.width, bottom - top);
          ctx.restore();
        },
      },
    };
  }

  function makeChart(id, series, yLabel, getBand) {
    const el = document.getElementById(id);
    const opts = {
      width: chartWidth(el),
      height: 200,
      scales: { x: { time: false } },
      axes: [
        { label: "simulated time (h)", stroke: css("--black") },
        { label: yLabel, stroke: css("--black"), size: 60 },
      ],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      series: [{ label: "h", value: (u, v) => (v === null ? "—" : v.toFixed(2)) }].concat(series),
      plugins: getBand ? [bandPlugin(getBand)] : [],
    };
    const data = [[]].concat(series.map(() => []));
    const chart = new uPlot(opts, data, el);
    el.insertBefore(chart.root, el.querySelector("figcaption"));
    return chart;
  }

  function bandOf(view, column) {
    const h = view && view.history;
    return h && h.bands ? h.bands.find((b) => b.column === column) : null;
  }

  function initCharts() {
    const solid = (label, colour) => ({ label: label, stroke: colour, width: 2 });
    const dashed = (label, colour) => ({ label: label, stroke: colour, width: 2, dash: [8, 5] });
    const dotted = (label, colour) => ({ label: label, stroke: colour, width: 2, dash: [2, 4] });
    state.charts.reservoir = makeChart("chart-reservoir",
      [solid("true", css("--vermillion")), dashed("reported", css("--blue"))], "mL");
    state.charts.dose = makeChart("chart-dose",
      [solid("delivered (true)", css("--vermillion")), dashed("programmed", css("--blue"))], "mcg");
    state.charts.csf = makeChart("chart-csf",
      [solid("CSF lumbar", css("--reddish-purple")), dotted("effect site", css("--black"))], "ng/mL",
      () => bandOf(state.view, "csf_lumbar_ng_per_ml"));
    state.charts.plasma = makeChart("chart-plasma",
      [solid("plasma", css("--orange"))], "ng/mL",
      () => bandOf(state.view, "plasma_ng_per_ml"));
  }

  function escapeText(s) {
    const span = document.createElement("span");
    span.textContent = s;
    return span.innerHTML;
  }

  function showView(view) {
    state.view = view;
    showStatus(view.row);
    const h = view.history;
    if (h && h.t_h) {
      const c = state.charts;
      c.reservoir.setData([h.t_h, h.reservoir_true_ml, h.reservoir_reported_ml]);
      c.dose.setData([h.t_h, h.delivered_true_mcg, h.programmed_mcg]);
      if (h.csf_lumbar_ng_per_ml) {
        c.csf.setData([h.t_h, h.csf_lumbar_ng_per_ml, h.effect_ng_per_ml]);
        c.plasma.setData([h.t_h, h.plasma_ng_per_ml]);
      }
      const last = h.t_h.length - 1;
      $("#reservoir-now").textContent = "Now: true " + fmt(h.reservoir_true_ml[last], 3) +
        " mL, reported " + fmt(h.reservoir_reported_ml[last], 3) + " mL.";
      $("#dose-now").textContent = "Now: delivered " + fmt(h.delivered_true_mcg[last], 1) +
        " mcg, programmed " + fmt(h.programmed_mcg[last], 1) + " mcg.";
      const csfBand = bandOf(view, "csf_lumbar_ng_per_ml");
      const plasmaBand = bandOf(view, "plasma_ng_per_ml");
      if (csfBand) $("#band-csf").textContent = csfBand.label + " " + fmt(csfBand.low, 0) + "–" + fmt(csfBand.high, 0) + " ng/mL (" + csfBand.source + ")";
      if (plasmaBand) $("#band-plasma").textContent = plasmaBand.label + " " + fmt(plasmaBand.low, 0) + "–" + fmt(plasmaBand.high, 0) + " ng/mL (" + plasmaBand.source + ")";
      if (view.now) {
        $("#csf-now").textContent = "Now: lumbar " + fmt(view.now.csf_lumbar_ng_per_ml, 1) +
          ", effect " + fmt(view.now.effect_ng_per_ml, 1) + " ng/mL.";
        $("#plasma-now").textContent = "Now: " + fmt(view.now.plasma_ng_per_ml, 3) + " ng/mL.";
      }
      showAlarms(h.alarms || [], h.t_h[0], h.t_h[last]);
    }
    showEvents(view.events || []);
    showSnapshots(view.snapshots || []);
    document.body.dataset.viewTh = String(view.row.t_h);
  }

  function showAlarms(spans, t0, t1) {
    const list = $("#alarm-spans");
    list.innerHTML = "";
    if (!spans.length) {
      list.innerHTML = "<li class='empty'>no alarm so far</li>";
      return;
    }
    const width = Math.max(t1 - t0, 1e-9);
    for (const s of spans) {
      const li = document.createElement("li");
      const end = s.end_h === null ? t1 : s.end_h;
      const left = ((s.start_h - t0) / width) * 100;
      const w = Math.max(((end - s.start_h) / width) * 100, 0.5);
      li.innerHTML = "<span class='label'>" + escapeText(s.alarm) + ": " + s.start_h.toFixed(2) + " h → " +
        (s.end_h === null ? "active" : s.end_h.toFixed(2) + " h") + "</span>" +
        "<span class='track' aria-hidden='true'><span class='span" + (s.end_h === null ? " open" : "") +
        "' style='left:" + left + "%;width:" + w + "%'></span></span>";
      list.appendChild(li);
    }
  }

  function showEvents(events) {
    const body = $("#events");
    body.innerHTML = events.map((e) =>
      "<tr><td>" + e.index + "</td><td>" + escapeText(e.rtc || "") + "</td><td>" + escapeText(e.code) +
      "</td><td>" + escapeText(e.labels.join(", ")) + "</td></tr>").join("");
  }

  function showSnapshots(snaps) {
    const list = $("#snapshots");
    list.innerHTML = "";
    if (!snaps.length) list.innerHTML = "<li class='empty'>none yet</li>";
    for (const s of snaps) addSnapshot(s);
  }

  function addSnapshot(s) {
    const list = $("#snapshots");
    if (list.querySelector('[data-snapshot="' + CSS.escape(s.id) + '"]')) return;
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.api = "POST /pumps/" + state.serial + "/restore";
    b.dataset.body = JSON.stringify({ snapshot: s.id });
    b.dataset.snapshot = s.id;
    b.textContent = "Restore " + s.id;
    li.appendChild(b);
    li.appendChild(document.createTextNode(" (taken at " + Number(s.t_h).toFixed(3) + " h)"));
    list.appendChild(li);
  }

  function showConversation(items) {
    const body = $("#conversation");
    if (!items.length) return;
    body.innerHTML = items.map((i) =>
      "<tr class='" + (i.ok ? "" : "bad") + "'><td>" + i.sim_time_h.toFixed(4) + "</td><td>" +
      (i.direction === "to_pump" ? "→ pump" : "← pump") + "</td><td>" + escapeText(i.name) +
      (i.ok ? "" : " ✗") + "</td><td>" + (i.counter === null ? "" : i.counter) + "</td><td><code>" +
      escapeText(i.detail || "") + "</code></td></tr>").join("");
    state.conversation = items;
    const scroller = body.closest(".scroll");
    scroller.scrollTop = scroller.scrollHeight;
  }

  if (page === "pump") {
    const initial = $("#initial-view");
    state.serial = initial.dataset.serial;
    initCharts();
    showView(JSON.parse(initial.textContent));
    window.addEventListener("resize", () => {
      for (const [id, chart] of Object.entries(state.charts)) {
        chart.setSize({ width: chartWidth(document.getElementById("chart-" + id)), height: 200 });
      }
    });
  }

  // ------------------------------------------------------------------ live events
  const url = "/ui/events" + (page === "pump" ? "?serial=" + encodeURIComponent(state.serial) : "");
  const source = new EventSource(url);
  state.source = source;
  const counted = (fn) => (event) => {
    state.messages += 1;
    document.body.dataset.messages = String(state.messages);
    fn(JSON.parse(event.data));
  };
  source.addEventListener("open", () => setLive("live", "open"));
  source.addEventListener("error", () => setLive("reconnecting…", "error"));
  source.addEventListener("clock", counted(showClock));
  source.addEventListener("rows", counted(onRows));
  source.addEventListener("pump", counted(showView));
  source.addEventListener("conversation", counted(showConversation));
})();
