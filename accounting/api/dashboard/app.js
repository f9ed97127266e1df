// Tanji control-room dashboard: plain JS and SVG, no library, nothing loaded from elsewhere.
// Loads a snapshot over REST, then follows /api/v1/stream (WebSocket); while the stream is down
// it polls, so the screen never freezes silently.
"use strict";

const API = "/api/v1";
const SVGNS = "http://www.w3.org/2000/svg";
const HISTORY = 180;         // sparkline points kept per product
const POLL_MS = 5000;        // polling period while the stream is down
const state = { sites: [], products: {}, footprints: [], meters: [], gateways: [], series: {},
                stats: {}, certificates: null, history: {}, lastUpdate: 0, ws: null, pollTimer: null };

const $ = (id) => document.getElementById(id);
const pick = (o, ...keys) => { for (const k of keys) if (o && o[k] !== undefined && o[k] !== null) return o[k]; return null; };
const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);

function fmt(v, digits) {
  v = num(v);
  if (v === null) return "–";
  if (digits === undefined) digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
// Times are shown in the plant's zone, whatever the zone of the screen's computer.
const siteZone = () => (state.sites[0] && state.sites[0].timezone) || "Asia/Shanghai";
const siteTime = (ms, opts = {}) => new Date(ms).toLocaleTimeString("zh-CN", { hour12: false, timeZone: siteZone(), ...opts });
const pct = (v, digits = 0) => (num(v) === null ? "–" : fmt(v * 100, digits) + " %");

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}
const bi = (zh, en) => { const s = el("span"); s.append(el("span", { class: "zh", text: zh }), el("span", { class: "en", text: " " + en })); return s; };

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

// ---------- snapshot ----------
async function loadSnapshot() {
  const [sites, fps, meters, health, certs] = await Promise.all([
    getJSON(API + "/sites"), getJSON(API + "/footprints"), getJSON(API + "/meters"), getJSON(API + "/health"),
    getJSON(API + "/certificates").catch(() => null)]);
  state.certificates = certs;
  state.sites = sites;
  state.products = {};
  for (const s of sites) for (const p of s.products) state.products[s.id + "/" + p.id] = p;
  const series = await Promise.all(sites.map((s) => getJSON(API + "/sites/" + encodeURIComponent(s.id) + "/series?window=day")));
  sites.forEach((s, i) => { state.series[s.id] = series[i]; });
  state.meters = meters;
  state.stats = health.stats || {};
  setIngest(health.ingest);
  applyFootprints(fps);
  renderAll();
}

// ---------- stream ----------
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
  if (msg.type === "footprints") {
    applyFootprints(msg.footprints || []);
    if (msg.series) Object.assign(state.series, msg.series);
  } else if (msg.type === "meters") {
    state.meters = msg.meters || state.meters;
    if (msg.gateways) state.gateways = msg.gateways;
    if (msg.stats) state.stats = msg.stats;
    if (msg.ingest) setIngest(msg.ingest);
  }
  renderAll();
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
  c.textContent = on ? "实时 live" : "离线 offline";
}
function setIngest(ingest) {
  const i = $("ingest");
  const text = { live: "数据流入 ingest live", stale: "数据中断 ingest stale", waiting: "等待数据 waiting for data" }[ingest] || "";
  i.textContent = text;
  i.className = "pill " + (ingest === "live" ? "on" : ingest === "stale" ? "stale" : "");
}

function applyFootprints(fps) {
  state.footprints = fps;
  state.lastUpdate = Date.now();
  for (const f of fps) {
    const key = f.site_id + "/" + f.product_id;
    const h = (state.history[key] = state.history[key] || []);
    h.push([Date.now(), num(f.kgco2e_per_unit_location), num(f.kgco2e_per_unit_market)]);
    if (h.length > HISTORY) h.shift();
  }
}

// ---------- rendering ----------
function renderAll() {
  $("site-name").textContent = state.sites.map((s) => s.name || s.id).join(" · ");
  renderProducts();
  renderLines();
  renderCoverage();
  renderEmissions();
  renderMeters();
  $("updated").textContent = "更新 updated " + siteTime(state.lastUpdate);
}

function figure(cls, zh, en, value, unit, testid) {
  const f = el("div", { class: "fig " + cls });
  f.append(el("div", { class: "label" }, bi(zh, en)), el("div", { class: "value", "data-testid": testid, text: value }), el("div", { class: "unit", text: unit }));
  return f;
}

function renderProducts() {
  const box = $("products");
  box.replaceChildren();
  if (!state.footprints.length) { box.append(el("div", { class: "meta" }, bi("暂无产量数据", "no production yet"))); return; }
  for (const f of state.footprints) {
    const key = f.site_id + "/" + f.product_id;
    const p = state.products[key] || {};
    const card = el("div", { class: "card", "data-product": f.product_id, "data-site": f.site_id });
    const title = el("div", { class: "name", text: p.name || f.product_id });
    const figs = el("div", { class: "figures" });
    figs.append(
      figure("loc", "基于位置", "location-based", fmt(f.kgco2e_per_unit_location), "kgCO2e / unit 每件", "loc-per-unit"),
      figure("mkt", "基于市场", "market-based", fmt(f.kgco2e_per_unit_market), "kgCO2e / unit 每件", "mkt-per-unit"));
    if (num(f.battery_kwh_per_unit)) {  // the record's EU battery figure: grid mix, no certificates
      figs.append(figure("small", "电池碳足迹", "EU battery", fmt(f.kgco2e_per_battery_kwh_eu), "kgCO2e / kWh", "battery-declared"));
    }
    figs.append(
      figure("small", "产量", "units", fmt(f.units, 0), "件 units", "units"),
      figure("small", "电量", "energy", fmt(f.energy_kwh), "kWh", "energy"));
    const q = el("div", { class: "quality", title: "metered / allocated / estimated" });
    for (const [cls, v] of [["m", f.share_metered], ["a", f.share_allocated], ["e", f.share_estimated]]) {
      const part = el("div", { class: cls });
      part.style.width = (num(v) || 0) * 100 + "%";  // CSSOM, allowed by the CSP (style attributes are not)
      q.append(part);
    }
    const meta = el("div", { class: "meta" });
    meta.append(
      el("span", { text: "计量 metered " + pct(f.share_metered) + " · 分摊 allocated " + pct(f.share_allocated) + " · 估算 estimated " + pct(f.share_estimated) }),
      el("span", { text: "不确定度 uncertainty ±" + fmt(f.uncertainty_pct_95, 1) + " % (95 %)" }),
      el("span", { text: "因子 factors " + (f.dataset_id || "?") + " v" + (f.dataset_version || "?") }),
      el("span", { text: "匹配 matching " + (f.matching_mode || "?") }));
    if (f.provisional) meta.append(el("span", { class: "badge prov", text: "临时 provisional" }));
    const reports = el("span");
    reports.append(el("a", { href: "/api/v1/reports/label/" + encodeURIComponent(f.site_id) + "/" + encodeURIComponent(f.product_id), text: "碳标识 carbon label" }));
    meta.append(reports);
    card.append(title, el("div", { class: "pid", text: f.product_id + " · " + f.site_id }), figs, q, meta, sparkline(state.history[key] || []));
    box.append(card);
  }
}

function sparkline(points) {
  const s = svg("svg", { class: "spark", viewBox: "0 0 400 48", preserveAspectRatio: "none" });
  const vals = points.flatMap((p) => [p[1], p[2]]).filter((v) => v !== null);
  if (points.length < 2 || !vals.length) return s;
  const lo = Math.min(...vals), hi = Math.max(...vals), span = hi - lo || Math.abs(hi) || 1;
  for (const [i, cls] of [[1, "var(--loc)"], [2, "var(--mkt)"]]) {
    const d = points.map((p, j) => (p[i] === null ? null : [(j / (points.length - 1)) * 400, 44 - ((p[i] - lo) / span) * 40]))
      .filter(Boolean).map((xy, j) => (j ? "L" : "M") + xy[0].toFixed(1) + " " + xy[1].toFixed(1)).join(" ");
    s.append(svg("path", { d, fill: "none", stroke: cls, "stroke-width": 2 }));
  }
  return s;
}

function meterId(m) { return pick(m, "meter", "meter_id", "id"); }
function meterValues(m) { return pick(m, "last_values", "values") || {}; }
function meterTs(m) { return pick(m, "last_ts_ms", "ts_ms", "last_ms"); }

function seriesCentres(h) { return pick(h, "cost_centres_kwh", "per_cost_centre_kwh", "cost_centres") || {}; }
function seriesStart(h) { return pick(h, "hour_start_ms", "start_ms", "ts_ms", "hour_ms"); }

function renderLines() {
  const power = {}, energy = {};
  for (const m of state.meters) {
    const info = meterInfo(meterId(m));
    const cc = info && info.cost_centre;
    if (!cc || info.role === "production_counter") continue;
    const p = num(meterValues(m).power_kw);
    if (p !== null) power[cc] = (power[cc] || 0) + p;
  }
  for (const rows of Object.values(state.series)) {
    for (const h of rows) for (const [cc, kwh] of Object.entries(seriesCentres(h))) energy[cc] = (energy[cc] || 0) + (num(kwh) || 0);
  }
  const names = {};
  for (const s of state.sites) for (const c of s.cost_centres) names[c.id] = c.name || c.id;
  const ids = [...new Set([...Object.keys(names), ...Object.keys(power), ...Object.keys(energy)])];
  $("lines").replaceChildren(...ids.map((id) => el("tr", { "data-centre": id },
    el("td", { text: names[id] || id }),
    el("td", { class: "num", "data-testid": "power", text: fmt(power[id], 1) }),
    el("td", { class: "num", "data-testid": "energy", text: fmt(energy[id], 1) }))));
}

function hourly() {
  // Hour rows of all sites merged by hour start, in time order.
  const byHour = new Map();
  for (const rows of Object.values(state.series)) {
    for (const h of rows) {
      const t = seriesStart(h);
      const acc = byHour.get(t) || { t, cons: 0, cov: 0, loc: 0, mkt: 0 };
      acc.cons += num(pick(h, "consumption_kwh")) || 0;
      acc.cov += num(pick(h, "covered_kwh")) || 0;
      acc.loc += num(pick(h, "kgco2e_location")) || 0;
      acc.mkt += num(pick(h, "kgco2e_market")) || 0;
      byHour.set(t, acc);
    }
  }
  return [...byHour.values()].sort((a, b) => a.t - b.t);
}

function renderCoverage() {
  const hours = hourly();
  const cons = hours.reduce((a, h) => a + h.cons, 0);
  const cov = hours.reduce((a, h) => a + Math.min(h.cov, h.cons), 0);
  $("renewable").textContent = cons > 0 ? pct(cov / cons) : "–";
  // The hourly-matched share is the footprint records' (energy-weighted over products): the
  // API's number. It exists only under hourly matching; otherwise the records say null, so do we.
  const scored = state.footprints.filter((f) => num(f.energy_kwh));
  const known = scored.length > 0 && scored.every((f) => num(f.hourly_matched_share) !== null);
  const energy = scored.reduce((a, f) => a + num(f.energy_kwh), 0);
  $("hourly-matched").textContent = known && energy > 0
    ? pct(scored.reduce((a, f) => a + num(f.hourly_matched_share) * num(f.energy_kwh), 0) / energy)
    : "– (hourly matching only)";
  // One GEC certifies 1 MWh.
  $("certs").textContent = state.certificates ? state.certificates.length + " MWh" : "–";
  bars($("chart-hourly-matched"), hours, [(h) => (h.cons > 0 ? Math.min(1, h.cov / h.cons) : 0)], ["matched"], 1);
}

function renderEmissions() {
  bars($("chart-emissions"), hourly(), [(h) => h.loc, (h) => h.mkt], ["loc", "mkt"]);
}

function bars(target, hours, getters, classes, fixedMax) {
  const vb = target.viewBox.baseVal, W = vb.width, H = vb.height, pad = 18;
  target.replaceChildren();
  target.append(svg("line", { class: "axis", x1: 0, x2: W, y1: H - pad, y2: H - pad }));
  if (!hours.length) return;
  const max = fixedMax || Math.max(1e-9, ...hours.flatMap((h) => getters.map((g) => g(h))));
  const slot = W / Math.max(hours.length, 12), bw = (slot * 0.8) / getters.length;
  hours.forEach((h, i) => {
    getters.forEach((g, k) => {
      const v = Math.max(0, g(h)), bh = (v / max) * (H - pad - 16);
      const r = svg("rect", { class: classes[k], x: i * slot + slot * 0.1 + k * bw, y: H - pad - bh, width: bw, height: bh });
      r.append(svg("title"));
      r.firstChild.textContent = fmt(v);
      target.append(r);
    });
    const t = svg("text", { x: i * slot + slot / 2, y: H - 4, "text-anchor": "middle" });
    t.textContent = siteTime(h.t, { hour: "2-digit", minute: "2-digit" });
    target.append(t);
  });
  const top = svg("text", { x: 4, y: 12 });
  top.textContent = fixedMax ? "100 %" : fmt(max);
  target.append(top);
}

function meterInfo(id) {
  for (const s of state.sites) for (const m of s.meters) if (m.id === id) return m;
  return null;
}
function meterPeriod(id) { const m = meterInfo(id); return (m && m.poll_period_s) || 1; }

function renderMeters() {
  const now = Date.now();
  const warnings = [];
  const rows = state.meters.map((m) => {
    const id = meterId(m), ts = meterTs(m), quality = pick(m, "last_quality", "quality") || "–";
    const age = ts ? (now - ts) / 1000 : null;
    const offline = age === null || age > Math.max(10, 3 * meterPeriod(id) + 5);
    if (offline) warnings.push(["bad", "电表离线 meter offline: " + id + (age === null ? "" : " (" + fmt(age, 0) + " s)")]);
    else if (quality !== "good" && quality !== "–") warnings.push(["warn", "数据质量 data quality: " + id + " " + quality]);
    const qcls = quality === "good" ? "q-good" : quality === "–" ? "" : "q-warn";
    return el("tr", { class: offline ? "offline" : "", "data-meter": id },
      el("td", { text: id }), el("td", { text: pick(m, "role") || "" }), el("td", { text: pick(m, "gateway") || "" }),
      el("td", { class: "num", text: fmt(meterValues(m).power_kw, 1) }),
      el("td", { class: "num", text: ts ? siteTime(ts) : "–" }),
      el("td", { class: qcls, text: quality }),
      el("td", { class: "num", text: fmt(pick(m, "comm_errors") || 0, 0) }));
  });
  $("meters").replaceChildren(...rows);
  const st = state.stats || {};
  for (const [gw, gaps] of Object.entries(st.seq_gaps || {})) if (gaps) warnings.push(["warn", "序号缺口 sequence gaps: " + gw + " " + gaps]);
  for (const [reason, n] of Object.entries(st.quarantined_by_reason || {})) if (n) warnings.push(["warn", "隔离消息 quarantined: " + reason + " " + n]);
  for (const f of state.footprints) {
    if (num(f.share_estimated) > 0) warnings.push(["warn", "估算电量 estimated energy: " + f.product_id + " " + pct(f.share_estimated, 1)]);
    if (f.residual_mix === "unavailable" || f.residual_mix === false) warnings.push(["warn", "无剩余组合因子 no residual mix: " + f.product_id + " (location factor used)"]);
  }
  const list = $("warnings");
  list.replaceChildren(...(warnings.length ? warnings.map(([cls, t]) => el("li", { class: cls, text: t }))
    : [el("li", { class: "none", text: "数据质量正常 data quality OK" })]));
}

function tick() {
  $("clock").textContent = new Date().toLocaleString("zh-CN", { hour12: false, timeZone: siteZone() });
}

tick();
setInterval(tick, 1000);
setInterval(renderMeters, 5000);  // meter ages grow even when no update arrives
loadSnapshot().catch((e) => { console.error(e); startPolling(); }).finally(connect);
