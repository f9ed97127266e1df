// Tanji control-room dashboard. Plain JS; charts by Apache ECharts (vendored, served by this
// app); nothing loaded from elsewhere. Views: overview (live, over the WebSocket), history
// (any window, from the API), alarms, and drill-downs of a line or a product. Every figure is
// read from the API as is (the footprint records, the overview): the page computes none.
"use strict";

const API = "/api/v1";
const POLL_MS = 5000;           // polling period while the stream is down
const REFRESH_MS = 5000;        // drill-down and alarm views follow the stream at most this often
const HISTORY_REFRESH_MS = 15000;
const state = {
  sites: [], site: null, products: {}, meters: [], gateways: [], stats: {}, footprints: [], overview: null,
  basis: "location", hbasis: "location", view: "overview", route: [], history: null,
  picker: { kind: "day" }, lastUpdate: 0, ws: null, pollTimer: null, refreshed: {}, firstRenderMs: null,
  acking: null,  // the alarm the acknowledgement form is open for
  flagsCache: null,  // the drill-down's per-reading flags: {key, at, flags}
};

const $ = (id) => document.getElementById(id);
const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
const locale = () => LOCALES[LANG];

function fmt(v, digits) {
  v = num(v);
  if (v === null) return "–";
  if (digits === undefined) digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
  return v.toLocaleString(locale(), { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
const pct = (v, digits = 0) => (num(v) === null ? "–" : fmt(v * 100, digits) + " %");
const siteZone = () => (state.site && state.site.timezone) || "Asia/Shanghai";
function siteTime(ms, opts) {
  return new Date(ms).toLocaleString(locale(), { hour12: false, timeZone: siteZone(),
    ...(opts || { hour: "2-digit", minute: "2-digit", second: "2-digit" }) });
}
const siteDateTime = (ms) => siteTime(ms, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) {
    let why = "HTTP " + r.status;
    try { why = (await r.json()).detail || why; } catch (e) { /* not JSON */ }
    throw new Error(why);
  }
  return r.json();
}
const sitePath = (rest) => API + "/sites/" + encodeURIComponent(state.site.id) + rest;

// ---------------------------------------------------------------- snapshot and stream
async function loadSnapshot() {
  const [sites, fps, meters, health] = await Promise.all([
    getJSON(API + "/sites"), getJSON(API + "/footprints"), getJSON(API + "/meters"), getJSON(API + "/health")]);
  state.sites = sites;
  state.site = state.site ? sites.find((s) => s.id === state.site.id) || sites[0] : sites[0];
  state.products = {};
  for (const s of sites) for (const p of s.products) state.products[s.id + "/" + p.id] = p;
  state.footprints = fps;
  state.meters = meters;
  state.stats = health.stats || {};
  setIngest(health.ingest);
  if (state.site) state.overview = await getJSON(sitePath("/overview"));
  state.lastUpdate = Date.now();
  renderAll();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + API + "/stream");
  state.ws = ws;
  ws.onopen = () => { setConn(true); stopPolling(); };
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  ws.onclose = () => { setConn(false); startPolling(); setTimeout(connect, 2000); };
  ws.onerror = () => ws.close();
}

function onMessage(msg) {
  state.lastUpdate = Date.now();
  if (msg.type === "footprints") {
    state.footprints = msg.footprints || [];
    renderProducts();
    followHistory();
  } else if (msg.type === "meters") {
    state.meters = msg.meters || state.meters;
    if (msg.gateways) state.gateways = msg.gateways;
    if (msg.stats) state.stats = msg.stats;
    if (msg.ingest) setIngest(msg.ingest);
    renderMeters();
  } else if (msg.type === "overview" && state.site && msg.sites && msg.sites[state.site.id]) {
    state.overview = msg.sites[state.site.id];
    renderOverview();
    followViews();
  }
  $("updated").textContent = t("footer.updated", { time: siteTime(state.lastUpdate) });
}

function startPolling() {
  if (state.pollTimer) return;
  state.pollTimer = setInterval(() => loadSnapshot().catch(() => {}), POLL_MS);
}
function stopPolling() { clearInterval(state.pollTimer); state.pollTimer = null; }

function setConn(on) {
  const c = $("conn");
  c.className = "pill " + (on ? "on" : "off");
  c.dataset.state = on ? "live" : "offline";
  c.dataset.i18n = on ? "conn.live" : "conn.offline";
  c.textContent = t(c.dataset.i18n);
}
function setIngest(ingest) {
  const i = $("ingest");
  i.dataset.state = ingest || "";
  i.textContent = ingest ? t("ingest." + ingest) : "";
  i.className = "pill " + (ingest === "live" ? "on" : ingest === "stale" ? "stale" : "");
}

// ---------------------------------------------------------------- rendering: overview
function renderAll() {
  applyStatic();
  setConn(state.ws && state.ws.readyState === 1);
  setIngest($("ingest").dataset.state);
  $("site-name").textContent = state.site ? state.site.name || state.site.id : "";
  $("csv-link").href = API + "/reports/footprints.csv" + (state.site ? "?site=" + encodeURIComponent(state.site.id) : "");
  renderOverview();
  renderProducts();
  renderMeters();
  if (state.view === "history" && state.history) renderHistory();
  if (state.view === "alarms" && state.alarmsData) renderAlarms();
  if (state.view === "drill" && state.drill) renderDrill();
  $("updated").textContent = state.lastUpdate ? t("footer.updated", { time: siteTime(state.lastUpdate) }) : "";
}

function badge(cls, text, attrs) { return el("span", { class: "badge " + cls, text, ...(attrs || {}) }); }

function renderOverview() {
  const o = state.overview;
  if (!o) return;
  renderRanking(o);
  renderFactor(o.factor || {});
  renderLog($("changes"), o.changes || [], t("changes.none"));
  renderAlarmList($("alarms-brief"), o.alarms || [], false);
  const open = (o.alarms || []).filter((a) => !a.acked_ms).length;
  const count = $("alarm-count");
  count.hidden = !open;
  count.textContent = open;
  $("information").replaceChildren(...(o.information || []).map((i) =>
    el("li", { class: "info", "data-kind": i.kind,
      text: t("info." + i.kind, { subject: i.kind === "matched_share_needs_hourly" ? t("matching." + i.subject) : i.subject }) })));
  if (state.firstRenderMs === null && (o.lines || []).length) {
    state.firstRenderMs = performance.now();
    window.__tanjiFirstRenderMs = state.firstRenderMs;
  }
}

function rateOf(line, basis) { return num(line["carbon_rate_" + basis + "_kg_per_h"]); }

function renderRanking(o) {
  const basis = state.basis;
  const rows = [...o.lines].sort((a, b) => (rateOf(b, basis) ?? -1) - (rateOf(a, basis) ?? -1));
  const max = Math.max(1e-9, ...rows.map((l) => rateOf(l, basis) || 0));
  $("ranking").replaceChildren(...rows.map((line, i) => {
    const rate = rateOf(line, basis);
    const bar = el("div", { class: "bar" });
    const fill = el("div", { class: "fill " + basis });
    fill.style.width = (100 * (rate || 0) / max).toFixed(1) + "%";  // CSSOM: allowed by the CSP
    bar.append(fill);
    const h = line.hour || {}, b = line.baseline || {};
    const key = "kgco2e_per_unit_" + basis;
    let vs = null;
    if (num(h[key]) !== null && num(b[key])) {
      const d = (h[key] / b[key] - 1) * 100;
      vs = el("span", { class: "delta " + (d > 5 ? "up" : d < -5 ? "down" : "flat"),
        text: (d > 0 ? "+" : "") + fmt(d, 0) + " % " + t("line.vs") });
    }
    const stateBadge = line.state ? badge("state " + line.state, t("state." + line.state), { "data-testid": "state" })
      : badge("state utility", t("line.utility"));
    const figures = line.kind === "production" ? el("div", { class: "hourly" },
      el("span", { class: "lab", text: t("line.hour") }),
      el("span", { "data-testid": "kwh-per-unit", text: fmt(h.kwh_per_unit) + " " + t("unit.kwh_per_unit") }),
      el("span", { "data-testid": "kg-per-unit", text: fmt(h[key]) + " " + t("unit.per_unit") }),
      el("span", { class: "base", title: b.days ? t("line.baseline.days", { days: b.days }) : t("line.baseline.none"),
        text: t("line.baseline") + " " + (b.days ? fmt(b[key]) + " (" + b.days + ")" : "–") }),
      vs) : null;
    return el("li", { class: "line", "data-line": line.id, "data-rank": i + 1, "data-state": line.state || "" },
      el("a", { href: "#/line/" + encodeURIComponent(line.id), class: "line-link" },
        el("span", { class: "rank", text: i + 1 }),
        el("span", { class: "name", text: line.name }), stateBadge),
      el("div", { class: "figs" },
        el("span", { class: "rate " + basis },
          el("span", { class: "v", "data-testid": "rate", text: fmt(rate, 1) }), el("span", { class: "u", text: " kgCO2e/h" })),
        el("span", { class: "power" }, el("span", { class: "v", "data-testid": "power", text: fmt(line.power_kw, 1) }),
          el("span", { class: "u", text: " kW" }))),
      bar, figures,
      (line.meters_offline || []).length ? el("div", { class: "warn", text: t("line.offline", { meters: line.meters_offline.join(", ") }) }) : null);
  }));
}

function renderFactor(f) {
  const rows = [
    [t("factor.location"), el("span", { class: "big", "data-testid": "factor-location", text: fmt(f.location_kg_per_kwh, 4) }), " kg/kWh"],
    [t("factor.market", { basis: t("uncovered." + (f.uncovered_basis || "grid_average")) }),
      num(f.residual_kg_per_kwh) !== null ? el("span", { class: "big", "data-testid": "factor-market", text: fmt(f.residual_kg_per_kwh, 4) })
        : el("span", { class: "note", text: t("factor.market.fallback") }), num(f.residual_kg_per_kwh) !== null ? " kg/kWh" : ""],
    [t("factor.dataset"), (f.dataset_id || "?") + " v" + (f.dataset_version || "?") + (f.gas_basis ? " · " + f.gas_basis : "")],
    [t("factor.source"), [f.publisher, f.source_reference].filter(Boolean).join(" · ") || "–"],
    [t("factor.region"), f.region || "–"],
    [t("factor.granularity"), f.granularity || "–"],
    [t("factor.matching"), f.matching_mode ? t("matching." + f.matching_mode) : "–"],
    [t("factor.hour"), num(f.hour_start_ms) !== null ? siteDateTime(f.hour_start_ms) + " +1 h" : "–"],
  ];
  $("factor").replaceChildren(el("dl", { class: "facts" }, ...rows.flatMap(([k, ...v]) => [el("dt", { text: k }), el("dd", {}, ...v)])));
}

function kindText(c) {
  const d = c.detail || {};
  const params = { subject: c.subject, ...d };
  for (const k of ["from", "to"]) if (num(d[k]) !== null) params[k] = fmt(d[k], c.kind === "factor_changed" ? 4 : Number.isInteger(d[k]) ? 0 : 3);
  if (num(d.seconds) !== null) params.seconds = fmt(d.seconds, 0);
  if (num(d.spool_depth) !== null) params.spool_depth = fmt(d.spool_depth, 0);
  const key = "kind." + c.kind;
  return I18N[LANG][key] || I18N.en[key] ? t(key, params) : c.message;
}

function renderLog(list, items, empty) {
  list.replaceChildren(...(items.length ? items.map((c) => el("li", { "data-kind": c.kind, class: "k-" + c.kind },
    el("time", { text: siteTime(c.ts_ms, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }) }),
    el("span", { text: kindText(c) }))) : [el("li", { class: "none", text: empty })]));
}

function renderAlarmList(list, alarms, withAck) {
  if (!alarms.length) { list.replaceChildren(el("li", { class: "none ok", text: t("alarms.none") })); return; }
  list.replaceChildren(...alarms.map((a) => {
    const li = el("li", { class: "sev-" + a.severity, "data-alarm": a.id, "data-kind": a.kind },
      badge("sev " + a.severity, t("severity." + a.severity)),
      el("time", { text: siteTime(a.raised_ms, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }) }),
      el("span", { class: "msg", text: kindText({ ...a, ts_ms: a.raised_ms }) }));
    if (a.acked_ms) li.append(badge("acked", t("alarms.acked") + " · " + a.acked_by));
    else if (withAck) li.append(el("button", { type: "button", class: "ack", text: t("alarms.ack"), onclick: () => acknowledge(a) }));
    return li;
  }));
}

function renderProducts() {
  const box = $("products");
  const fps = state.footprints.filter((f) => !state.site || f.site_id === state.site.id);
  if (!fps.length) { box.replaceChildren(el("div", { class: "hint", text: t("products.none") })); return; }
  box.replaceChildren(...fps.map((f) => {
    const p = state.products[f.site_id + "/" + f.product_id] || {};
    const figs = el("div", { class: "figures" },
      figure("loc", t("fig.location"), fmt(f.kgco2e_per_unit_location), t("unit.per_unit"), "loc-per-unit"),
      figure("mkt", t("fig.market"), fmt(f.kgco2e_per_unit_market), t("unit.per_unit"), "mkt-per-unit"));
    if (num(f.battery_kwh_per_unit)) {  // the record's EU battery figure: grid mix, no certificates
      figs.append(figure("small", t("fig.battery"), fmt(f.kgco2e_per_battery_kwh_eu), "kgCO2e/kWh", "battery-declared"));
    }
    figs.append(figure("small", t("fig.units"), fmt(f.units, 0), t("unit.units"), "units"),
      figure("small", t("fig.energy"), fmt(f.energy_kwh), "kWh", "energy"));
    return el("div", { class: "card", "data-product": f.product_id, "data-site": f.site_id },
      el("a", { class: "name", href: "#/product/" + encodeURIComponent(f.product_id), text: p.name || f.product_id }),
      el("div", { class: "pid", text: f.product_id }), figs, qualityBar(f), qualityMeta(f),
      el("a", { class: "label-link", href: API + "/reports/label/" + encodeURIComponent(f.site_id) + "/" + encodeURIComponent(f.product_id), text: t("label.link") }));
  }));
  const scored = fps.filter((f) => num(f.energy_kwh));
  // The hourly-matched share is the records' (energy-weighted over products); it exists under
  // hourly matching only, otherwise the records say null and so does the page.
  const known = scored.length > 0 && scored.every((f) => num(f.hourly_matched_share) !== null);
  const energy = scored.reduce((a, f) => a + num(f.energy_kwh), 0);
  $("hourly-matched").textContent = known && energy > 0
    ? pct(scored.reduce((a, f) => a + num(f.hourly_matched_share) * num(f.energy_kwh), 0) / energy)
    : "– " + t("kpi.matched.none");
}

function figure(cls, label, value, unit, testid) {
  return el("div", { class: "fig " + cls }, el("div", { class: "label", text: label }),
    el("div", { class: "value", "data-testid": testid, text: value }), el("div", { class: "unit", text: unit }));
}

function qualityBar(f) {
  const q = el("div", { class: "quality", title: t("quality.metered") + " / " + t("quality.allocated") + " / " + t("quality.estimated") });
  for (const [cls, v] of [["m", f.share_metered], ["a", f.share_allocated], ["e", f.share_estimated]]) {
    const part = el("div", { class: cls });
    part.style.width = (num(v) || 0) * 100 + "%";
    q.append(part);
  }
  return q;
}

function qualityMeta(f) {
  return el("div", { class: "meta" },
    el("span", { text: t("quality.metered") + " " + pct(f.share_metered) + " · " + t("quality.allocated") + " " + pct(f.share_allocated)
      + " · " + t("quality.estimated") + " " + pct(f.share_estimated, 1) }),
    el("span", { text: t("quality.uncertainty") + " ±" + fmt(f.uncertainty_pct_95, 1) + " % (95 %)" }),
    el("span", { text: t("quality.dataset") + " " + (f.dataset_id || "?") + " v" + (f.dataset_version || "?") }),
    el("span", { text: t("quality.matching") + " " + (f.matching_mode || "?") }),
    f.provisional ? badge("prov", t("quality.provisional")) : badge("closed", t("quality.closed")));
}

function meterInfo(id) {
  for (const s of state.sites) for (const m of s.meters) if (m.id === id) return m;
  return null;
}

/** What a footprint's figures rest on (docs/audit.md): its signed batches, whether every one of
 * them is held, and the Merkle root an auditor checks with `tanji audit verify`. */
function evidenceText(f) {
  if (!f.evidence_root) return t("evidence.unsigned");
  return t(f.evidence_complete ? "evidence.complete" : "evidence.incomplete", { n: fmt(f.evidence_batches || 0, 0) })
    + " · " + f.evidence_root.slice(0, 16) + "…";
}

/** A reading's quality code (tanji/wire.py QUALITY_CODES) in the page's language. */
function qualityText(q) {
  return q ? t("qcode." + q) : "–";
}

function renderMeters() {
  const rows = state.meters.filter((m) => !state.site || m.site === state.site.id).map((m) => {
    const q = m.last_quality || "–";
    const values = m.last_values || {};
    return el("tr", { "data-meter": m.meter },
      el("td", { text: m.meter }), el("td", { text: t("role." + m.role) }),
      el("td", { class: "num", text: fmt(values.power_kw, 1) }),
      el("td", { class: "num", text: m.last_ts_ms ? siteTime(m.last_ts_ms) : "–" }),
      el("td", { class: q === "good" ? "q-good" : q === "–" ? "" : "q-warn", text: qualityText(m.last_quality) }),
      el("td", { class: "num", text: fmt(m.comm_errors || 0, 0) }));
  });
  $("meters").replaceChildren(...rows);
}

// ---------------------------------------------------------------- history
function tzOffset(ms) {
  // "+08:00" for the site's zone at that instant (Intl's longOffset: "GMT+08:00", "GMT" at UTC).
  const part = new Intl.DateTimeFormat("en-US", { timeZone: siteZone(), timeZoneName: "longOffset" })
    .formatToParts(new Date(ms)).find((p) => p.type === "timeZoneName").value;
  return part === "GMT" ? "+00:00" : part.slice(3);
}
function localParts(ms) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", { timeZone: siteZone(), hour12: false,
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" })
    .formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
  return { date: parts.year + "-" + parts.month + "-" + parts.day, month: parts.year + "-" + parts.month,
    hour: (parts.hour === "24" ? "00" : parts.hour) + ":00", time: (parts.hour === "24" ? "00" : parts.hour) + ":" + parts.minute };
}
function isoLocal(date, time) {
  // A wall time of the site as ISO 8601 with the site's offset then (the API's start= format).
  const wall = Date.parse(date + "T" + time + ":00Z");
  const ms = (o) => (o[0] === "-" ? -1 : 1) * (Number(o.slice(1, 3)) * 60 + Number(o.slice(4, 6))) * 60e3;
  const offset = tzOffset(wall - ms(tzOffset(wall)));
  return date + "T" + time + ":00" + offset;
}

function defaultPicker() {
  const now = localParts(Date.now());
  const hour = Number(now.hour.slice(0, 2));
  return { kind: "day", date: now.date, month: now.month, hour: now.hour, shift: String(hour - hour % 8),
    start: now.date + "T00:00", end: now.date + "T" + now.time, batch: "" };
}

function pickerQuery(p) {
  switch (p.kind) {
    case "hour": return "window=hour&start=" + encodeURIComponent(isoLocal(p.date, p.hour));
    case "shift": return "window=shift&start=" + encodeURIComponent(isoLocal(p.date, String(p.shift).padStart(2, "0") + ":00"));
    case "day": return "window=day&start=" + encodeURIComponent(isoLocal(p.date, "00:00"));
    case "month": return "window=month&start=" + encodeURIComponent(isoLocal(p.month + "-01", "00:00"));
    case "custom": return "start=" + encodeURIComponent(isoLocal(p.start.slice(0, 10), p.start.slice(11, 16)))
      + "&end=" + encodeURIComponent(isoLocal(p.end.slice(0, 10), p.end.slice(11, 16)));
    case "batch": return "batch=" + encodeURIComponent(p.batch);
    default: return "";
  }
}

function syncPicker() {
  const p = state.picker;
  for (const b of document.querySelectorAll("#picker [data-kind]")) b.classList.toggle("on", b.dataset.kind === p.kind);
  const show = { "pick-date": ["hour", "shift", "day"], "pick-month": ["month"], "pick-hour": ["hour"], "pick-shift": ["shift"] };
  for (const [id, kinds] of Object.entries(show)) $(id).hidden = !kinds.includes(p.kind);
  for (const l of document.querySelectorAll("#picker .custom")) l.hidden = p.kind !== "custom";
  document.querySelector("#picker .batch").hidden = p.kind !== "batch";
  for (const id of ["pick-prev", "pick-next"]) $(id).hidden = ["custom", "batch"].includes(p.kind);
  $("pick-date").value = p.date; $("pick-month").value = p.month; $("pick-hour").value = p.hour;
  $("pick-shift").value = p.shift; $("pick-start").value = p.start; $("pick-end").value = p.end; $("pick-batch").value = p.batch;
}

function readPicker() {
  const p = state.picker;
  p.date = $("pick-date").value || p.date; p.month = $("pick-month").value || p.month;
  p.hour = ($("pick-hour").value || p.hour).slice(0, 3) + "00"; p.shift = $("pick-shift").value;
  p.start = $("pick-start").value || p.start; p.end = $("pick-end").value || p.end; p.batch = $("pick-batch").value.trim();
}

function stepPicker(dir) {
  readPicker();
  const p = state.picker;
  const shiftDate = (days) => {
    const d = new Date(p.date + "T12:00:00Z"); d.setUTCDate(d.getUTCDate() + days); p.date = d.toISOString().slice(0, 10);
  };
  if (p.kind === "day") shiftDate(dir);
  else if (p.kind === "month") {
    const [y, m] = p.month.split("-").map(Number); const d = new Date(Date.UTC(y, m - 1 + dir, 1));
    p.month = d.toISOString().slice(0, 7);
  } else if (p.kind === "hour") {
    let h = Number(p.hour.slice(0, 2)) + dir;
    if (h < 0) { h = 23; shiftDate(-1); } else if (h > 23) { h = 0; shiftDate(1); }
    p.hour = String(h).padStart(2, "0") + ":00";
  } else if (p.kind === "shift") {
    let s = Number(p.shift) + 8 * dir;
    if (s < 0) { s = 16; shiftDate(-1); } else if (s > 16) { s = 0; shiftDate(1); }
    p.shift = String(s);
  }
  syncPicker();  // the inputs show the new window before it is read again
  applyPicker();
}

function applyPicker() {
  // One time picker for the history and the drill-downs.
  readPicker();
  syncPicker();
  if (state.view === "drill") loadDrill().catch(() => {}); else loadHistory();
}

function drillQuery() {
  // The picker's window; a batch is the hours the history found for it.
  const p = state.picker;
  if (p.kind !== "batch") return pickerQuery(p);
  const h = state.history;
  return h && state.historyQuery === pickerQuery(p) ? "start=" + h.start_ms + "&end=" + h.end_ms : "";
}

async function loadHistory() {
  if (!state.site) return;
  const query = pickerQuery(state.picker);
  const wanted = sitePath("/history?" + query);
  const status = $("history-status");
  status.textContent = t("history.loading");
  status.dataset.state = "loading";
  const hash = "#/history?" + query;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  try {
    const data = await getJSON(wanted);
    if (sitePath("/history?" + pickerQuery(state.picker)) !== wanted) return;  // a newer request is on its way
    state.history = data;
    state.historyQuery = query;
    state.refreshed.history = Date.now();
    renderHistory();
  } catch (e) {
    status.textContent = t("history.error", { why: e.message });
    status.dataset.state = "error";
  }
}

function renderHistory() {
  const h = state.history;
  if (!h) return;
  const any = h.buckets.some((b) => b.has_data);
  $("history-range").textContent = t("history.range", { from: siteDateTime(h.start_ms), to: siteDateTime(h.end_ms), tz: h.timezone })
    + " · " + t("history.bucket." + h.bucket);
  renderTotals($("history-totals"), h.totals.products, h.totals.lines, h.lines);
  const status = $("history-status");
  Charts.ready().then(() => {
    if (state.history !== h || state.view !== "history") return;  // replaced or left meanwhile
    Charts.emissions($("chart-emissions"), h, state.hbasis);
    Charts.perUnit($("chart-per-unit"), h);
    Charts.energy($("chart-energy"), h);
    Charts.factor($("chart-factor"), h);
    status.textContent = any ? "" : t("history.empty");
    $("history-range").dataset.start = h.start_ms;
    $("history-range").dataset.buckets = h.buckets.filter((b) => b.has_data).length;
    status.dataset.state = any ? "loaded" : "empty";
  }, (e) => { status.textContent = t("history.error", { why: e.message }); status.dataset.state = "error"; });
  $("history-csv").href = API + "/reports/footprints.csv?site=" + encodeURIComponent(h.site_id) + "&"
    + (state.picker.kind === "batch" ? "start=" + h.start_ms + "&end=" + h.end_ms : state.historyQuery || "");
}

function renderTotals(table, products, lineTotals, lines) {
  const head = el("tr", {}, ...["table.product", "table.units", "table.kwh", "table.kwh_per_unit", "table.kg_loc", "table.kg_mkt",
    "table.per_unit_loc", "table.per_unit_mkt", "table.estimated"].map((k, i) => el("th", { class: i ? "num" : "", text: t(k) })));
  const row = (name, r, attrs) => el("tr", attrs || {}, el("td", { text: name }), el("td", { class: "num", text: fmt(r.units, 0) }),
    el("td", { class: "num", text: fmt(r.energy_kwh, 1) }),
    el("td", { class: "num", text: fmt(num(r.units) ? r.energy_kwh / r.units : r.kwh_per_unit) }),
    el("td", { class: "num", text: fmt(r.kgco2e_location, 1) }), el("td", { class: "num", text: fmt(r.kgco2e_market, 1) }),
    el("td", { class: "num", text: fmt(r.kgco2e_per_unit_location) }), el("td", { class: "num", text: fmt(r.kgco2e_per_unit_market) }),
    el("td", { class: "num", text: pct(r.share_estimated, 1) }));
  const body = products.map((r) => row(r.name || r.product_id, r, { "data-product": r.product_id }));
  for (const l of lines || []) if (l.kind === "production" && lineTotals[l.id]) body.push(row(l.name, lineTotals[l.id], { class: "line-total", "data-line": l.id }));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
}

function followHistory() {
  if (state.view !== "history" || !state.history || state.picker.kind === "batch") return;
  if (state.history.end_ms < Date.now() - 120e3) return;  // a closed window does not move
  if (Date.now() - (state.refreshed.history || 0) < HISTORY_REFRESH_MS) return;
  state.refreshed.history = Date.now();
  loadHistory();
}

// ---------------------------------------------------------------- alarms
async function loadAlarms() {
  if (!state.site) return;
  const site = "site=" + encodeURIComponent(state.site.id);
  const [active, all, changes] = await Promise.all([getJSON(API + "/alarms?state=active&" + site),
    getJSON(API + "/alarms?state=all&limit=300&since=" + (Date.now() - 7 * 86400e3) + "&" + site),
    getJSON(API + "/changes?limit=200&" + site)]);
  state.alarmsData = { active, all, changes };
  state.refreshed.alarms = Date.now();
  renderAlarms();
}

function renderAlarms() {
  const d = state.alarmsData;
  renderAlarmList($("alarms-active"), d.active, true);
  if (state.acking) $("ack-what").textContent = kindText({ ...state.acking, ts_ms: state.acking.raised_ms });
  const head = el("tr", {}, ...["alarms.raised", "severity.alarm", "", "alarms.cleared", "alarms.by", "alarms.note"]
    .map((k) => el("th", { text: k ? t(k) : "" })));
  const when = (ms) => (ms ? siteTime(ms, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }) : "–");
  $("alarms-history").replaceChildren(el("thead", {}, head), el("tbody", {}, ...d.all.map((a) => el("tr", { "data-alarm": a.id },
    el("td", { text: when(a.raised_ms) }), el("td", {}, badge("sev " + a.severity, t("severity." + a.severity))),
    el("td", { text: kindText({ ...a, ts_ms: a.raised_ms }) }), el("td", { text: a.cleared_ms ? when(a.cleared_ms) : t("alarms.open") }),
    el("td", { text: a.acked_by ? a.acked_by + " · " + when(a.acked_ms) : "–" }), el("td", { text: a.ack_note || "" })))));
  renderLog($("changes-all"), d.changes, t("changes.none"));
}

// Acknowledging is a form of the alarms view (not browser dialogs, which kiosk browsers block):
// it sits outside the lists the stream re-renders, so what the operator types stays. The name is
// kept for the browser session, the token too once it worked (never in localStorage).
function acknowledge(alarm) {
  state.acking = alarm;
  $("ack-what").textContent = kindText({ ...alarm, ts_ms: alarm.raised_ms });
  $("ack-by").value = $("ack-by").value || sessionStorage.getItem("tanji.operator") || "";
  $("ack-note").value = "";
  $("ack-token-field").hidden = Boolean(sessionStorage.getItem("tanji.token"));
  $("ack-error").textContent = "";
  $("ack-panel").hidden = false;
  $("ack-panel").scrollIntoView({ block: "nearest" });
  ($("ack-by").value ? $("ack-note") : $("ack-by")).focus();
}

function closeAcknowledge() {
  state.acking = null;
  $("ack-panel").hidden = true;
}

async function submitAcknowledge() {
  const alarm = state.acking;
  if (!alarm) return;
  const by = $("ack-by").value.trim();
  const token = sessionStorage.getItem("tanji.token") || $("ack-token").value.trim();
  if (!by) { $("ack-by").focus(); return; }
  if (!token) { $("ack-token-field").hidden = false; $("ack-token").focus(); return; }
  $("ack-submit").disabled = true;
  try {
    const r = await fetch(API + "/alarms/" + alarm.id + "/acknowledge", { method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify({ by, note: $("ack-note").value.trim() }) });
    if (r.status === 401 || r.status === 403) {
      sessionStorage.removeItem("tanji.token");
      $("ack-token-field").hidden = false;
      $("ack-token").value = "";
      $("ack-error").textContent = t("alarms.ack.failed", { why: t("alarms.ack.bad_token") });
      $("ack-token").focus();
      return;
    }
    if (r.status === 404 || r.status === 409) { $("ack-error").textContent = t("alarms.ack.gone"); await loadAlarms(); return; }
    if (!r.ok) { $("ack-error").textContent = t("alarms.ack.failed", { why: "HTTP " + r.status }); return; }
    sessionStorage.setItem("tanji.operator", by);
    sessionStorage.setItem("tanji.token", token);
    $("ack-token").value = "";
    closeAcknowledge();
    await loadAlarms();
  } catch (e) {
    $("ack-error").textContent = t("alarms.ack.failed", { why: e.message });
  } finally {
    $("ack-submit").disabled = false;
  }
}

// ---------------------------------------------------------------- drill-down
async function loadDrill() {
  const [kind, id] = state.route;
  if (!state.site || !id) return;
  const query = drillQuery();
  const data = await getJSON(sitePath((kind === "line" ? "/lines/" : "/products/") + encodeURIComponent(id))
    + (query ? "?" + query : ""));
  if (state.route[1] !== id) return;  // navigated elsewhere meanwhile
  const meters = kind === "line" ? data.meters.map((m) => m.id) : [data.product.counter_meter];
  // A service that keeps no per-reading flags (501) still shows the rest of the drill-down.
  const flags = await loadFlags(meters, data.start_ms, data.end_ms).catch((e) => ({ error: e.message }));
  if (state.route[1] !== id) return;
  state.drill = { kind, id, data, flags };
  state.refreshed.drill = Date.now();
  renderDrill();
}

// The accounting's own per-reading flags (GET /api/v1/meters/{id}/flags): which readings its
// energy step took as a counter reset, a rollover, a rebase, an implausible value or a gap.
// Answering reads the window's stored readings, so the page asks once per meters and window,
// and for a window still open at most every minute, not on every stream update.
const FLAGS_REFRESH_MS = 60e3, FLAGS_MAX_MS = 31 * 86400e3, FLAGS_SHOWN = 50;
async function loadFlags(meters, lo, hi) {
  const open = hi > Date.now() - 120e3;
  const key = meters.join(",") + "|" + lo + "|" + (open ? "open" : hi);
  const had = state.flagsCache;
  if (had && had.key === key && (!open || Date.now() - had.at < FLAGS_REFRESH_MS)) return had.flags;
  let flags = null;  // null: not asked (the window is longer than the API answers)
  if (hi - lo <= FLAGS_MAX_MS) {
    const site = "site=" + encodeURIComponent(state.site.id) + "&start=" + lo + "&end=" + hi;
    const answers = await Promise.all(meters.map((m) => getJSON(API + "/meters/" + encodeURIComponent(m) + "/flags?" + site)));
    flags = answers.flatMap((a) => a.channels.flatMap((c) => c.flagged.map((f) => ({ meter: a.meter, channel: c.channel, ...f }))))
      .sort((a, b) => b.ts_ms - a.ts_ms);
  }
  state.flagsCache = { key, at: Date.now(), flags };
  return flags;
}

function renderFlags(flags) {
  const section = el("section", { class: "panel wide", id: "drill-flags-panel" }, el("h2", { text: t("drill.flags") }));
  if (flags === null) { section.append(el("p", { class: "hint", text: t("drill.flags.too_long") })); return section; }
  if (flags.error) { section.append(el("p", { class: "hint", text: t("drill.flags.unavailable", { why: flags.error }) })); return section; }
  const counts = {};
  for (const f of flags) for (const name of f.flags) counts[name] = (counts[name] || 0) + 1;
  section.append(el("p", { class: "hint", id: "drill-flag-counts" }, ...Object.entries(counts).map(([name, n], i) =>
    el("span", { "data-flag": name, text: (i ? " · " : "") + t("drill.flags.count", { flag: t("flag." + name), n: fmt(n, 0) }) }))));
  if (flags.length > FLAGS_SHOWN) section.append(el("p", { class: "hint", text: t("drill.flags.latest", { n: FLAGS_SHOWN }) }));
  const list = el("ul", { class: "log", id: "drill-flags" });
  list.replaceChildren(...(flags.length ? flags.slice(0, FLAGS_SHOWN).map((f) => el("li",
    { "data-meter": f.meter, "data-channel": f.channel, "data-flags": f.flags.join(" "), class: "flagged" },
    el("time", { text: siteTime(f.ts_ms, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }) }),
    el("span", { text: f.meter + "/" + f.channel + " " + fmt(f.value, f.channel.endsWith("_kwh") ? 3 : 0) + " · "
      + f.flags.map((name) => t("flag." + name)).join(" · ") }))) : [el("li", { class: "none", text: t("drill.flags.none") })]));
  section.append(list);
  return section;
}

function renderDrill() {
  const { kind, data } = state.drill;
  const body = $("drill-body");
  $("history-range").textContent = t("history.range", { from: siteDateTime(data.start_ms), to: siteDateTime(data.end_ms), tz: siteZone() });
  $("history-status").textContent = "";
  $("history-status").dataset.state = "loaded";
  if (kind === "line") {
    const l = data.line;
    $("drill-title").textContent = t("drill.line") + " · " + l.name;
    $("drill-head").replaceChildren(el("div", { class: "figs" },
      l.state ? badge("state " + l.state, t("state." + l.state), { "data-testid": "state" }) : badge("state utility", t("line.utility")),
      el("span", { class: "power" }, el("span", { class: "v", text: fmt(l.power_kw, 1) }), el("span", { class: "u", text: " kW" }))));
    const meters = el("table", { class: "totals" }, el("thead", {}, el("tr", {}, ...["meters.meter", "meters.role", "meters.model",
      "meters.online", "meters.last", "meters.values", "meters.quality", "meters.errors", "meters.readings"].map((k) => el("th", { text: t(k) })))),
    el("tbody", {}, ...data.meters.map((m) => el("tr", { "data-meter": m.id, class: m.online ? "" : "offline" },
      el("td", { text: m.id }), el("td", { text: t("role." + m.role) }), el("td", { text: m.model }),
      el("td", { class: m.online ? "q-good" : "q-bad", text: t(m.online ? "meters.online" : "meters.offline") }),
      el("td", { text: m.last_ts_ms ? siteDateTime(m.last_ts_ms) : "–" }),
      el("td", { class: "values", text: Object.entries(m.last_values || {}).filter(([, v]) => v !== null)
        .map(([k, v]) => k + " " + (k.endsWith("_id") ? String(v) : fmt(v))).join(" · ") }),  // an id is not a quantity
      el("td", { class: m.last_quality === "good" ? "q-good" : "q-warn", text: qualityText(m.last_quality) }),
      el("td", { class: "num", text: fmt(m.comm_errors || 0, 0) }), el("td", { class: "num", text: fmt(m.readings || 0, 0) })))));
    const events = el("ul", { class: "log", id: "drill-events" });
    renderLog(events, data.counter_events, t("drill.events.none"));
    const alarms = el("ul", { class: "log" });
    renderAlarmList(alarms, data.alarms.filter((a) => a.active), false);
    const products = el("table", { class: "totals" });
    renderTotals(products, data.products, {}, []);
    body.replaceChildren(
      el("section", { class: "panel wide" }, el("h2", { text: t("drill.meters") }), el("div", { class: "scroll" }, meters)),
      el("section", { class: "panel" }, el("h2", { text: t("drill.events") }), events),
      el("section", { class: "panel" }, el("h2", { text: t("drill.alarms") }), alarms),
      renderFlags(state.drill.flags),
      el("section", { class: "panel wide" }, el("h2", { text: t("drill.products") }), el("div", { class: "scroll" }, products)));
  } else {
    const p = data.product, f = data.footprint || {};
    $("drill-title").textContent = t("drill.product") + " · " + p.name;
    $("drill-head").replaceChildren(el("div", { class: "figures" },
      figure("loc", t("fig.location"), fmt(f.kgco2e_per_unit_location), t("unit.per_unit"), "loc-per-unit"),
      figure("mkt", t("fig.market"), fmt(f.kgco2e_per_unit_market), t("unit.per_unit"), "mkt-per-unit"),
      figure("small", t("fig.units"), fmt(f.units, 0), t("unit.units"), "units"),
      figure("small", t("fig.energy"), fmt(f.energy_kwh), "kWh", "energy")));
    const quality = el("dl", { class: "facts" }, ...[
      [t("quality.metered"), pct(f.share_metered, 1)], [t("quality.allocated"), pct(f.share_allocated, 1)],
      [t("quality.estimated"), pct(f.share_estimated, 1)], [t("quality.primary"), pct(f.primary_data_share, 1)],
      [t("quality.uncertainty"), "±" + fmt(f.uncertainty_pct_95, 1) + " % (95 %)"],
      [t("quality.dataset"), (f.dataset_id || "?") + " v" + (f.dataset_version || "?") + " · " + (f.factor_region || "")],
      [t("quality.matching"), (f.matching_mode || "?") + (f.uncovered_basis === "grid_average" ? " · " + t("factor.market.fallback") : "")],
      [t("quality.revision"), String(f.revision ?? "–")],
      [t("quality.evidence"), evidenceText(f)],
      ["", f.provisional ? t("quality.provisional") : t("quality.closed")],
    ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    const chart = el("div", { class: "chart", id: "chart-drill" });
    const events = el("ul", { class: "log", id: "drill-events" });
    renderLog(events, data.counter_events, t("drill.events.none"));
    body.replaceChildren(
      el("section", { class: "panel" }, el("h2", { text: t("drill.quality") }), qualityBar(f), quality),
      el("section", { class: "panel" }, el("h2", { text: t("drill.events") }), events),
      renderFlags(state.drill.flags),
      el("section", { class: "panel wide" }, el("h2", { text: t("drill.hourly") }), chart));
    Charts.ready().then(() => Charts.productHours(chart, data.history, p.name));
  }
}

function followViews() {
  const now = Date.now();
  if (state.view === "drill" && now - (state.refreshed.drill || 0) > REFRESH_MS) { state.refreshed.drill = now; loadDrill().catch(() => {}); }
  if (state.view === "alarms" && now - (state.refreshed.alarms || 0) > REFRESH_MS) { state.refreshed.alarms = now; loadAlarms().catch(() => {}); }
}

// ---------------------------------------------------------------- routing and controls
function route() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "overview").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const view = parts[0] === "line" || parts[0] === "product" ? "drill" : ["overview", "history", "alarms"].includes(parts[0]) ? parts[0] : "overview";
  state.view = view;
  state.route = parts;
  for (const v of ["overview", "history", "alarms", "drill"]) $("view-" + v).hidden = v !== view;
  $("picker-panel").hidden = view !== "history" && view !== "drill";
  for (const a of document.querySelectorAll("nav [data-view]")) a.classList.toggle("on", a.dataset.view === view);
  if (view === "history") {
    if (query && query !== state.historyQuery) {
      state.picker = { ...defaultPicker(), ...pickerFromQuery(query) };
      syncPicker();
    }
    loadHistory();
  } else if (view === "alarms") loadAlarms().catch(() => {});
  else if (view === "drill") { $("drill-body").replaceChildren(); $("drill-title").textContent = ""; loadDrill().catch(() => {}); }
  window.scrollTo(0, 0);
}

function pickerFromQuery(query) {
  const q = new URLSearchParams(query);
  if (q.get("batch")) return { kind: "batch", batch: q.get("batch") };
  const start = q.get("start");
  const local = start ? localParts(Date.parse(start)) : null;
  if (q.get("window") && local) {
    const kind = q.get("window");
    const hour = Number(local.hour.slice(0, 2));
    return { kind, date: local.date, month: local.month, hour: local.hour, shift: String(hour - hour % 8) };
  }
  if (start && q.get("end")) {
    const end = localParts(Date.parse(q.get("end")));
    return { kind: "custom", start: local.date + "T" + local.time, end: end.date + "T" + end.time };
  }
  return {};
}

function controls() {
  $("lang").addEventListener("click", () => { setLang(LANG === "zh" ? "en" : "zh"); renderAll(); });
  for (const b of document.querySelectorAll("[data-basis]")) b.addEventListener("click", () => {
    state.basis = b.dataset.basis;
    for (const o of document.querySelectorAll("[data-basis]")) o.classList.toggle("on", o === b);
    renderOverview();
  });
  for (const b of document.querySelectorAll("[data-hbasis]")) b.addEventListener("click", () => {
    state.hbasis = b.dataset.hbasis;
    for (const o of document.querySelectorAll("[data-hbasis]")) o.classList.toggle("on", o === b);
    renderHistory();
  });
  for (const b of document.querySelectorAll("#picker [data-kind]")) b.addEventListener("click", () => {
    readPicker();
    state.picker.kind = b.dataset.kind;
    syncPicker();
    if (b.dataset.kind !== "custom" && b.dataset.kind !== "batch") applyPicker();
  });
  $("picker").addEventListener("submit", (e) => { e.preventDefault(); applyPicker(); });
  $("ack-form").addEventListener("submit", (e) => { e.preventDefault(); submitAcknowledge(); });
  $("ack-cancel").addEventListener("click", closeAcknowledge);
  $("pick-prev").addEventListener("click", () => stepPicker(-1));
  $("pick-next").addEventListener("click", () => stepPicker(1));
  $("pick-now").addEventListener("click", () => {
    state.picker = { ...defaultPicker(), kind: state.picker.kind };
    syncPicker();
    applyPicker();
  });
  for (const id of ["pick-date", "pick-month", "pick-hour", "pick-shift"]) $(id).addEventListener("change", () => applyPicker());
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => Charts.resize());
}

function tick() {
  $("clock").textContent = new Date().toLocaleString(locale(), { hour12: false, timeZone: siteZone(),
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

applyStatic();
controls();
tick();
setInterval(tick, 1000);
loadSnapshot()
  .catch((e) => { console.warn("snapshot failed, polling", e.message); startPolling(); })
  .finally(() => {
    state.picker = defaultPicker();
    syncPicker();
    route();
    connect();
  });
