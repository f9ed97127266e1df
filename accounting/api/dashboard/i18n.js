// The dashboard's two languages. One language at a time (the switch in the header), chosen by
// ?lang=zh|en, then the last choice on this screen, then Chinese. Every text of the page is a
// key here: HTML elements carry data-i18n="key", scripts call t("key", {name: value}).
"use strict";

const I18N = {
  zh: {
    "app.title": "碳迹 · 实时产品碳足迹",
    "nav.overview": "概览", "nav.history": "历史", "nav.alarms": "报警",
    "lang.switch": "English", "lang.switch.title": "Switch to English",
    "conn.connecting": "连接中", "conn.live": "实时", "conn.offline": "离线",
    "ingest.live": "数据流入", "ingest.stale": "数据中断", "ingest.waiting": "等待数据",
    "overview.lines": "产线碳排放速率排名（当前）",
    "overview.lines.hint": "按当前碳排放速率排序；点击产线查看电表",
    "basis.location": "基于位置", "basis.market": "基于市场", "basis.label": "排名依据",
    "line.rank": "排名", "line.power": "功率", "line.rate": "碳排放速率",
    "line.hour": "本小时", "line.kwh_per_unit": "电耗", "line.kg_per_unit": "碳足迹",
    "line.baseline": "基准", "line.baseline.none": "无基准（近期同时段无生产）",
    "line.baseline.days": "近{days}个生产日同一小时", "line.vs": "较基准",
    "line.offline": "电表离线：{meters}", "line.utility": "公用工程",
    "state.running": "运行", "state.stopped": "停机", "state.unknown": "状态未知",
    "factor.title": "当前电网排放因子", "factor.location": "位置因子（电网平均）",
    "factor.market": "市场因子（未覆盖电量：{basis}）", "factor.market.fallback": "无剩余组合因子：市场法使用电网因子",
    "uncovered.residual_mix": "剩余组合", "uncovered.fossil_only": "化石能源", "uncovered.grid_average": "电网平均",
    "matching.annual": "年度", "matching.monthly": "月度", "matching.hourly": "逐时",
    "kpi.matched": "逐时匹配比例", "kpi.matched.none": "（仅逐时匹配）", "unit.kwh_per_unit": "kWh/件",
    "factor.dataset": "数据集", "factor.source": "来源", "factor.region": "电网区域",
    "factor.granularity": "时间粒度", "factor.hour": "适用时段", "factor.matching": "绿证匹配",
    "changes.title": "最新变化", "changes.none": "暂无变化",
    "alarms.title": "报警", "alarms.active": "当前报警", "alarms.none": "无当前报警",
    "alarms.history": "报警历史（7天）", "alarms.ack": "确认", "alarms.acked": "已确认",
    "alarms.raised": "发生", "alarms.cleared": "结束", "alarms.by": "确认人", "alarms.note": "备注",
    "alarms.ack.who": "确认人（姓名或工号）：", "alarms.ack.note": "处理说明（可空）：",
    "alarms.ack.token": "请输入写入令牌（API token）：", "alarms.ack.failed": "确认失败：{why}",
    "alarms.open": "处理中", "alarms.more": "查看全部报警",
    "info.title": "信息", "info.no_residual_mix": "该电网区域没有发布剩余组合因子：未被绿证或合同覆盖的电量按电网（位置）因子计入市场法（GHG Protocol 范围二的规定做法），无需处理。",
    "info.matched_share_needs_hourly": "绿证按{subject}匹配：逐时匹配比例仅在逐时匹配下计算。",
    "products.title": "产品碳足迹（今日至今）", "products.none": "暂无产量",
    "fig.location": "基于位置", "fig.market": "基于市场", "fig.battery": "电池碳足迹（欧盟）",
    "fig.units": "产量", "fig.energy": "电量", "unit.per_unit": "kgCO2e/件", "unit.units": "件",
    "quality.metered": "计量", "quality.allocated": "分摊", "quality.estimated": "估算",
    "quality.uncertainty": "不确定度", "quality.primary": "一手数据", "quality.dataset": "因子",
    "quality.matching": "匹配", "quality.revision": "修订", "quality.provisional": "临时（本时段未结束）",
    "quality.closed": "已结算", "label.link": "碳标识",
    "qcode.good": "正常", "qcode.stale": "陈旧", "qcode.comm_error": "通信错误", "qcode.out_of_range": "超出量程",
    "qcode.counter_reset_suspected": "疑似计数复位",
    "meters.title": "电表状态", "meters.meter": "电表", "meters.role": "角色", "meters.gateway": "网关",
    "meters.kw": "功率 kW", "meters.last": "最后读数", "meters.quality": "质量", "meters.errors": "通信错误",
    "meters.readings": "读数", "meters.model": "型号", "meters.online": "在线", "meters.offline": "离线",
    "meters.values": "读数值",
    "history.title": "历史", "history.load": "加载", "history.window": "时间范围",
    "shipments.title": "出口货运", "shipments.document": "报关单/发票", "shipments.date": "日期",
    "shipments.destination": "目的国 · 买方", "shipments.products": "产品", "shipments.kg": "kgCO2e 市场/位置",
    "shipments.status": "状态", "shipments.none": "暂无出口货运（POST /api/v1/shipments 或 CSV 导入）",
    "shipments.draft": "草稿", "shipments.issued": "已签发", "shipments.superseded": "已被取代",
    "window.hour": "小时", "window.shift": "班次", "window.day": "日", "window.month": "月",
    "window.custom": "自定义", "window.batch": "批次",
    "history.prev": "上一个", "history.next": "下一个", "history.now": "当前",
    "history.shift1": "早班 00–08", "history.shift2": "中班 08–16", "history.shift3": "晚班 16–24",
    "history.start": "开始", "history.end": "结束", "history.batch": "批次号",
    "history.loading": "加载中…", "history.empty": "该时段没有数据",
    "history.emissions": "各产线碳排放", "history.per_unit": "各产品单位碳足迹",
    "history.energy": "各成本中心电量（计量）", "history.factor": "电网排放因子",
    "history.totals": "时段合计", "history.csv": "下载 CSV（本时段）",
    "history.provisional": "临时（未结算）", "history.closed": "已结算",
    "history.range": "{from} 至 {to}（{tz}）", "history.bucket.hour": "逐时", "history.bucket.day": "逐日",
    "history.error": "无法加载：{why}",
    "table.product": "产品", "table.line": "产线", "table.units": "产量", "table.kwh": "电量 kWh",
    "table.kg_loc": "kgCO2e 位置", "table.kg_mkt": "kgCO2e 市场", "table.per_unit_loc": "每件 位置",
    "table.per_unit_mkt": "每件 市场", "table.estimated": "估算占比", "table.kwh_per_unit": "kWh/件",
    "drill.back": "返回概览", "drill.line": "产线详情", "drill.product": "产品详情",
    "drill.meters": "电表", "drill.events": "计数器事件（所选时段）", "drill.events.none": "该时段无计数器事件",
    "drill.products": "产品（所选时段）", "drill.footprint": "碳足迹（所选时段）", "drill.quality": "数据质量",
    "drill.hourly": "所选时段单位碳足迹", "drill.alarms": "相关报警",
    "axis.kg": "kgCO2e", "axis.kg_per_h": "kgCO2e/h", "axis.kg_per_unit": "kgCO2e/件", "axis.kwh": "kWh",
    "axis.kg_per_kwh": "kg/kWh",
    "footer.csv": "CSV 导出", "footer.api": "API 文档", "footer.source": "数据来源：现场电表",
    "footer.updated": "更新于 {time}",
    "kind.line_started": "{subject} 开机", "kind.line_stopped": "{subject} 停机",
    "kind.factor_changed": "电网因子变化：{from} → {to} kg/kWh",
    "kind.meter_offline": "电表 {subject} 离线", "kind.meter_online": "电表 {subject} 恢复在线",
    "kind.estimated_gap": "电表 {subject} 读数中断 {seconds} 秒（{gaps} 次），该段电量按估算计入",
    "kind.counter_step_back": "{subject} 计数倒退：{from} → {to}（计数器复位、换表或设备从旧值重启），请核对产量与电量",
    "kind.counter_rollover": "{subject} 计数器溢出归零：{from} → {to}",
    "kind.implausible_jump": "{subject} 计数跳变：{from} → {to}，超过合理上限，未计入",
    "kind.gateway_backlog": "网关 {subject} 积压：{spool_depth} 条读数未发送",
    "kind.negative_remainder": "{subject}：分表之和超过总表（超出电表精度），请检查接线和互感器变比",
    "role.grid_import": "总表", "role.submeter": "分表", "role.production_counter": "产量计数", "role.pv": "光伏",
    "severity.alarm": "报警", "severity.warning": "警告", "severity.info": "信息",
  },
  en: {
    "app.title": "Tanji · live product carbon footprints",
    "nav.overview": "Overview", "nav.history": "History", "nav.alarms": "Alarms",
    "lang.switch": "中文", "lang.switch.title": "切换到中文",
    "conn.connecting": "connecting", "conn.live": "live", "conn.offline": "offline",
    "ingest.live": "ingest live", "ingest.stale": "ingest stale", "ingest.waiting": "waiting for data",
    "overview.lines": "Lines ranked by carbon rate now",
    "overview.lines.hint": "Ranked by their carbon rate now; open a line for its meters",
    "basis.location": "location-based", "basis.market": "market-based", "basis.label": "rank by",
    "line.rank": "rank", "line.power": "power", "line.rate": "carbon rate",
    "line.hour": "this hour", "line.kwh_per_unit": "energy", "line.kg_per_unit": "footprint",
    "line.baseline": "baseline", "line.baseline.none": "no baseline (no production at this hour lately)",
    "line.baseline.days": "same hour, last {days} production days", "line.vs": "vs baseline",
    "line.offline": "meters offline: {meters}", "line.utility": "utility",
    "state.running": "running", "state.stopped": "stopped", "state.unknown": "state unknown",
    "factor.title": "Grid factor in effect", "factor.location": "location factor (grid average)",
    "factor.market": "market factor (uncovered energy: {basis})", "factor.market.fallback": "no residual mix: the market method uses the grid factor",
    "uncovered.residual_mix": "residual mix", "uncovered.fossil_only": "fossil only", "uncovered.grid_average": "grid average",
    "matching.annual": "annually", "matching.monthly": "monthly", "matching.hourly": "hourly",
    "kpi.matched": "hourly-matched share", "kpi.matched.none": "(hourly matching only)", "unit.kwh_per_unit": "kWh/unit",
    "factor.dataset": "dataset", "factor.source": "source", "factor.region": "grid region",
    "factor.granularity": "granularity", "factor.hour": "applies to", "factor.matching": "certificate matching",
    "changes.title": "What changed", "changes.none": "nothing yet",
    "alarms.title": "Alarms", "alarms.active": "Active alarms", "alarms.none": "no active alarm",
    "alarms.history": "Alarm history (7 days)", "alarms.ack": "Acknowledge", "alarms.acked": "acknowledged",
    "alarms.raised": "raised", "alarms.cleared": "ended", "alarms.by": "by", "alarms.note": "note",
    "alarms.ack.who": "Acknowledged by (name or badge):", "alarms.ack.note": "What was done (optional):",
    "alarms.ack.token": "Write token (API token):", "alarms.ack.failed": "could not acknowledge: {why}",
    "alarms.open": "open", "alarms.more": "all alarms",
    "info.title": "Information", "info.no_residual_mix": "No residual-mix factor is published for this grid region: energy not covered by certificates or contracts counts at the grid (location) factor in the market method (the GHG Protocol Scope 2 rule). Nothing to do.",
    "info.matched_share_needs_hourly": "Certificates are matched {subject}: an hourly-matched share exists under hourly matching only.",
    "products.title": "Product carbon footprint (today so far)", "products.none": "no production yet",
    "fig.location": "location-based", "fig.market": "market-based", "fig.battery": "EU battery figure",
    "fig.units": "units", "fig.energy": "energy", "unit.per_unit": "kgCO2e/unit", "unit.units": "units",
    "quality.metered": "metered", "quality.allocated": "allocated", "quality.estimated": "estimated",
    "quality.uncertainty": "uncertainty", "quality.primary": "primary data", "quality.dataset": "factors",
    "quality.matching": "matching", "quality.revision": "revision", "quality.provisional": "provisional (period still open)",
    "quality.closed": "closed", "label.link": "carbon label",
    "qcode.good": "good", "qcode.stale": "stale", "qcode.comm_error": "communication error", "qcode.out_of_range": "out of range",
    "qcode.counter_reset_suspected": "counter reset suspected",
    "meters.title": "Meter status", "meters.meter": "meter", "meters.role": "role", "meters.gateway": "gateway",
    "meters.kw": "power kW", "meters.last": "last reading", "meters.quality": "quality", "meters.errors": "comm errors",
    "meters.readings": "readings", "meters.model": "model", "meters.online": "online", "meters.offline": "offline",
    "meters.values": "values",
    "history.title": "History", "history.load": "Load", "history.window": "Time window",
    "shipments.title": "Export shipments", "shipments.document": "declaration / invoice", "shipments.date": "date",
    "shipments.destination": "destination · buyer", "shipments.products": "products", "shipments.kg": "kgCO2e market / location",
    "shipments.status": "status", "shipments.none": "no shipments yet (POST /api/v1/shipments or a CSV import)",
    "shipments.draft": "draft", "shipments.issued": "issued", "shipments.superseded": "superseded",
    "window.hour": "hour", "window.shift": "shift", "window.day": "day", "window.month": "month",
    "window.custom": "custom", "window.batch": "batch",
    "history.prev": "previous", "history.next": "next", "history.now": "now",
    "history.shift1": "shift 1, 00–08", "history.shift2": "shift 2, 08–16", "history.shift3": "shift 3, 16–24",
    "history.start": "from", "history.end": "to", "history.batch": "batch id",
    "history.loading": "loading…", "history.empty": "no data in this window",
    "history.emissions": "Emissions per line", "history.per_unit": "Footprint per unit, per product",
    "history.energy": "Metered energy per cost centre", "history.factor": "Grid emission factor",
    "history.totals": "Window totals", "history.csv": "Download CSV (this window)",
    "history.provisional": "provisional (open)", "history.closed": "closed",
    "history.range": "{from} to {to} ({tz})", "history.bucket.hour": "hourly", "history.bucket.day": "daily",
    "history.error": "could not load: {why}",
    "table.product": "product", "table.line": "line", "table.units": "units", "table.kwh": "kWh",
    "table.kg_loc": "kgCO2e location", "table.kg_mkt": "kgCO2e market", "table.per_unit_loc": "per unit, location",
    "table.per_unit_mkt": "per unit, market", "table.estimated": "estimated", "table.kwh_per_unit": "kWh/unit",
    "drill.back": "back to overview", "drill.line": "Line", "drill.product": "Product",
    "drill.meters": "Meters", "drill.events": "Counter events (selected window)", "drill.events.none": "no counter event in this window",
    "drill.products": "Products (selected window)", "drill.footprint": "Footprint (selected window)", "drill.quality": "Data quality",
    "drill.hourly": "Footprint per unit over the selected window", "drill.alarms": "Alarms",
    "axis.kg": "kgCO2e", "axis.kg_per_h": "kgCO2e/h", "axis.kg_per_unit": "kgCO2e/unit", "axis.kwh": "kWh",
    "axis.kg_per_kwh": "kg/kWh",
    "footer.csv": "CSV export", "footer.api": "API docs", "footer.source": "source: on-site meters",
    "footer.updated": "updated {time}",
    "kind.line_started": "{subject} started", "kind.line_stopped": "{subject} stopped",
    "kind.factor_changed": "grid factor changed: {from} → {to} kg/kWh",
    "kind.meter_offline": "meter {subject} offline", "kind.meter_online": "meter {subject} back online",
    "kind.estimated_gap": "meter {subject}: {seconds} s without readings (gaps: {gaps}); that energy is estimated",
    "kind.counter_step_back": "{subject} went back: {from} → {to} (counter reset, meter swap or a device restarted from an older value); check units and energy",
    "kind.counter_rollover": "{subject} rolled over: {from} → {to}",
    "kind.implausible_jump": "{subject} jumped {from} → {to}, beyond its plausible rate: not booked",
    "kind.gateway_backlog": "gateway {subject}: {spool_depth} readings waiting to be sent",
    "kind.negative_remainder": "{subject}: submeters exceed the incomer beyond the meters' accuracy; check wiring and CT ratios",
    "role.grid_import": "incomer", "role.submeter": "submeter", "role.production_counter": "production counter", "role.pv": "PV",
    "severity.alarm": "alarm", "severity.warning": "warning", "severity.info": "information",
  },
};

const LANGS = ["zh", "en"];
const LOCALES = { zh: "zh-CN", en: "en-GB" };

function chooseLang() {
  const asked = new URLSearchParams(location.search).get("lang");
  if (LANGS.includes(asked)) return asked;
  try { const saved = localStorage.getItem("tanji.lang"); if (LANGS.includes(saved)) return saved; } catch (e) { /* private mode */ }
  return "zh";
}

let LANG = chooseLang();

function t(key, params) {
  let text = (I18N[LANG] && I18N[LANG][key]) || I18N.en[key] || key;
  if (params) text = text.replace(/\{(\w+)\}/g, (m, k) => (params[k] === undefined || params[k] === null ? m : String(params[k])));
  return text;
}

function applyStatic() {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  document.title = t("app.title");
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
}

function setLang(lang) {
  LANG = lang;
  try { localStorage.setItem("tanji.lang", lang); } catch (e) { /* private mode */ }
  applyStatic();
  document.dispatchEvent(new CustomEvent("tanji:lang", { detail: lang }));  // self-contained panels re-render
}
