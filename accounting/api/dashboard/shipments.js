// Export shipments panel: every shipment with its status (draft, issued; superseded versions
// linked), from GET /api/v1/shipments, refreshed every 15 s. Self-contained: the rest of the
// dashboard does not depend on it. Texts come from i18n.js (t); a language switch re-renders.
(function () {
  "use strict";
  const body = document.getElementById("shipments");
  if (!body) return;
  const fmt = (v, d) => (typeof v === "number" ? v.toLocaleString(LOCALES[LANG], { maximumFractionDigits: d, minimumFractionDigits: d }) : "–");
  const status = (s) => t("shipments." + s);
  let last = null;

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
    last = rows;
    body.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell(tr, t("shipments.none"));
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
      const badge = document.createElement("span");
      badge.className = "badge status-" + s.status;
      badge.dataset.testid = "shipment-status";
      badge.textContent = status(s.status) + (s.status === "issued" ? " v" + s.version : "");
      const st = cell(tr, badge);
      for (const v of s.versions.filter((x) => x.status === "superseded")) {
        st.appendChild(document.createTextNode(" "));
        const old = link(base + "/document?version=" + v.version, "v" + v.version + " " + status("superseded"));
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
  document.addEventListener("tanji:lang", () => { if (last) render(last); });
  refresh();
  setInterval(refresh, 15000);
})();
