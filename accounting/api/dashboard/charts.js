// History charts, drawn by Apache ECharts (vendored in vendor/echarts, served by this app and
// loaded only when a chart is first shown, so the live overview does not wait for it). Every
// chart has axes with units, a legend and tooltips; buckets still open (provisional: the hour
// has not closed, its numbers may move) are drawn paler and shaded, closed ones solid.
"use strict";

const Charts = (() => {
  const COLORS = { text: "#dbe4ea", muted: "#a9bac6", grid: "#2a3a46", bg: "#111b22", prov: "rgba(255, 181, 71, 0.12)" };
  const PALETTE = ["#5fb3ff", "#3ddc97", "#ffb547", "#d29bff", "#ff8a80", "#7fe3f0", "#f5e17a"];
  const instances = new Map();
  let loading = null;

  function ready() {
    if (window.echarts) return Promise.resolve();
    if (!loading) {
      loading = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = "/dashboard/vendor/echarts/echarts.min.js";
        script.onload = resolve;
        script.onerror = () => { loading = null; reject(new Error("could not load the chart library")); };
        document.head.append(script);
      });
    }
    return loading;
  }

  function chart(el) {
    let c = instances.get(el);
    if (!c || c.isDisposed() || c.getDom() !== el) {
      c = echarts.init(el, null, { renderer: "canvas" });
      instances.set(el, c);
    }
    return c;
  }

  function labels(h) {
    const days = new Set(h.buckets.map((b) => siteTime(b.start_ms, { month: "2-digit", day: "2-digit" })));
    return h.buckets.map((b) => h.bucket === "day"
      ? siteTime(b.start_ms, { month: "2-digit", day: "2-digit" })
      : siteTime(b.start_ms, days.size > 1 ? { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }
        : { hour: "2-digit", minute: "2-digit" }));
  }

  function provisionalArea(h, cats) {
    const idx = h.buckets.map((b, i) => (b.provisional && b.has_data ? i : -1)).filter((i) => i >= 0);
    if (!idx.length) return undefined;
    return { silent: true, itemStyle: { color: COLORS.prov },
      label: { show: true, position: "insideTopRight", color: "#ffcf8a", formatter: t("history.provisional") },
      data: [[{ xAxis: cats[idx[0]] }, { xAxis: cats[idx[idx.length - 1]] }]] };
  }

  function base(h, unit, digits) {
    const cats = labels(h);
    return {
      cats,
      option: {
        backgroundColor: COLORS.bg, animation: false,
        textStyle: { color: COLORS.text, fontFamily: getComputedStyle(document.body).fontFamily },
        grid: { left: 8, right: 16, top: 64, bottom: 8, containLabel: true },
        legend: { top: 0, textStyle: { color: COLORS.text }, type: "scroll", pageTextStyle: { color: COLORS.text } },
        tooltip: { trigger: "axis", confine: true, backgroundColor: "#0d1418", borderColor: COLORS.grid,
          textStyle: { color: COLORS.text }, valueFormatter: (v) => (num(v) === null ? "–" : fmt(v, digits) + " " + unit) },
        xAxis: { type: "category", data: cats, axisLabel: { color: COLORS.muted, hideOverlap: true },
          axisLine: { lineStyle: { color: COLORS.grid } } },
        yAxis: { type: "value", name: unit, nameTextStyle: { color: COLORS.muted, align: "left" },
          axisLabel: { color: COLORS.muted }, splitLine: { lineStyle: { color: COLORS.grid } } },
        aria: { enabled: true },
      },
    };
  }

  const bar = (h, values, name, color, stack) => ({
    name, type: "bar", stack, itemStyle: { color },
    data: values.map((v, i) => ({ value: v, itemStyle: h.buckets[i].provisional ? { opacity: 0.5 } : undefined })),
  });

  function empty(el, h) {
    const none = !h.buckets.some((b) => b.has_data);
    el.dataset.empty = none ? "1" : "0";
    return none;
  }

  function emissions(el, h, basis) {
    const { cats, option } = base(h, t("axis.kg"), 1);
    const lines = h.lines.filter((l) => l.kind === "production");
    option.series = lines.map((l, k) => bar(h, h.buckets.map((b) => (b.has_data ? num((b.lines[l.id] || {})["kgco2e_" + basis]) : null)),
      l.name, PALETTE[k % PALETTE.length], "kg"));
    if (option.series[0]) option.series[0].markArea = provisionalArea(h, cats);
    empty(el, h);
    chart(el).setOption(option, true);
  }

  function perUnit(el, h) {
    const { cats, option } = base(h, t("axis.kg_per_unit"), 3);
    option.series = h.products.flatMap((p, k) => ["location", "market"].map((basis) => ({
      name: p.name + " · " + t("basis." + basis), type: "line", connectNulls: false, symbolSize: 5,
      lineStyle: { type: basis === "market" ? "dashed" : "solid", width: 2 }, itemStyle: { color: PALETTE[k % PALETTE.length] },
      data: h.buckets.map((b) => num((b.products[p.id] || {})["kgco2e_per_unit_" + basis])),
    })));
    if (option.series[0]) option.series[0].markArea = provisionalArea(h, cats);
    empty(el, h);
    chart(el).setOption(option, true);
  }

  function energy(el, h) {
    const { cats, option } = base(h, t("axis.kwh"), 1);
    option.series = h.lines.map((l, k) => bar(h, h.buckets.map((b) => (b.has_data ? num((b.lines[l.id] || {}).metered_kwh) : null)),
      l.name, PALETTE[k % PALETTE.length], "kwh"));
    if (option.series[0]) option.series[0].markArea = provisionalArea(h, cats);
    empty(el, h);
    chart(el).setOption(option, true);
  }

  function factor(el, h) {
    const { option } = base(h, t("axis.kg_per_kwh"), 4);
    option.yAxis.scale = true;
    option.series = [{ name: t("factor.location"), type: "line", step: "end", symbol: "none",
      itemStyle: { color: PALETTE[0] }, data: h.buckets.map((b) => num(b.location_kg_per_kwh)) }];
    chart(el).setOption(option, true);
  }

  function productHours(el, hist, name) {
    const h = { bucket: hist.bucket, buckets: hist.buckets.map((b) => ({ ...b, has_data: num(b.energy_kwh) > 0 })) };
    const { cats, option } = base(h, t("axis.kg_per_unit"), 3);
    option.series = ["location", "market"].map((basis, k) => ({
      name: name + " · " + t("basis." + basis), type: "line", symbolSize: 5, itemStyle: { color: PALETTE[k] },
      lineStyle: { type: basis === "market" ? "dashed" : "solid" },
      data: h.buckets.map((b) => num(b["kgco2e_per_unit_" + basis])) }));
    option.series[0].markArea = provisionalArea(h, cats);
    chart(el).setOption(option, true);
  }

  function resize() { for (const c of instances.values()) if (!c.isDisposed()) c.resize(); }

  return { ready, emissions, perUnit, energy, factor, productHours, resize };
})();
