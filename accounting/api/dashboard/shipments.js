// Export shipments panel: every shipment with its status (draft, issued; superseded versions
// linked), from GET /api/v1/shipments, refreshed every 15 s. Self-contained: the rest of the
// dashboard does not depend on it.
(function () {
  "use strict";
  const body = document.getElementById("shipments");
  if (!body) return;
  const fmt = (v, d) => (typeof v === "number" ? v.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "–");
  const STATUS = { draft: "草稿 draft", issued: "已签发 issued", superseded: "已被取代 superseded" };

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (text instanceof Node) td.appendChild(text); else td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function render(rows) {
    body.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell(tr, "暂无出口货运 no shipments yet (POST /api/v1/shipments or a CSV import)");
      td.colSpan = 7;
      body.appendChild(tr);
      return;
    }
    for (const s of rows.slice(0, 50)) {
      const tr = document.createElement("tr");
      tr.dataset.shipment = s.shipment_id;
      const base = "/api/v1/shipments/" + encodeURIComponent(s.shipment_id);
      cell(tr, s.status === "issued" ? link(base + "/document", s.shipment_id) : s.shipment_id);
      cell(tr, s.date);
      cell(tr, s.destination + " · " + s.buyer);
      cell(tr, s.lines.map((l) => l.product_id + " × " + l.quantity).join(", "));
      cell(tr, s.totals ? fmt(s.totals.kgco2e_market, 1) + " / " + fmt(s.totals.kgco2e_location, 1) : "–", "num");
      const status = document.createElement("span");
      status.className = "badge status-" + s.status;
      status.dataset.testid = "shipment-status";
      status.textContent = STATUS[s.status] + (s.status === "issued" ? " v" + s.version : "");
      const st = cell(tr, status);
      for (const v of s.versions.filter((x) => x.status === "superseded")) {
        st.appendChild(document.createTextNode(" "));
        const old = link(base + "/document?version=" + v.version, "v" + v.version + " " + STATUS.superseded);
        old.className = "badge status-superseded";
        st.appendChild(old);
      }
      body.appendChild(tr);
    }
  }

  async function refresh() {
    try {
      const r = await fetch("/api/v1/shipments");
      if (r.ok) render(await r.json());
    } catch (e) { /* the panel keeps its last rows while the server is away */ }
  }
  refresh();
  setInterval(refresh, 15000);
})();
