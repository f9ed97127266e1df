"""`tanji factors`: keep the emission factors current — list, show, import, diff.

The versions are the shipped ones plus those imported into a state directory's ledger
(``--state-dir``, the accounting service's: its ``ledger.sqlite``), so an import here is what
the service loads at its next start, and the same operations exist over the HTTP API
(`/api/v1/factors*`). Imports are validated and append-only: a version, once imported, keeps
its content; a correction is a new version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from accounting.errors import AccountingError
from accounting.factors.catalogue import FactorCatalogue
from accounting.factors.selection import dataset_for
from accounting.factors.tables import load_table
from accounting.store.ledger import LedgerStore
from tanji.errors import ConfigError
from tanji.methods import dataset_ref


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", metavar="DIR",
                        help="the accounting service's state directory (its ledger.sqlite keeps imported "
                             "versions); without it only the shipped datasets are known and import is refused")
    sub = parser.add_subparsers(dest="factors_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="every dataset version: id, version, announcement, basis, regions",
                       description="List every dataset version (shipped and imported).")
    _json_flag(p)
    p = sub.add_parser("show", help="one version (ID@VERSION) or the latest-per-hour series (ID) in full",
                       description="Show a dataset's values and provenance. ID alone is the latest published "
                                   "factor for each hour; ID@VERSION is one version.")
    p.add_argument("ref", metavar="ID[@VERSION]", help="a dataset id (latest published factor for each hour) or ID@VERSION")
    _json_flag(p)
    p = sub.add_parser("import", help="import a published table (CSV with provenance, or JSON); append-only",
                       description="Validate a published table and add it as a new version (see "
                                   "accounting/factors/tables.py for the CSV format).")
    p.add_argument("file", metavar="FILE", help="a CSV table with its provenance, or a JSON data file")
    _json_flag(p)
    p = sub.add_parser("diff", help="what a new version changes for each product of a site over a period",
                       description="Recompute a site's period from its stored readings with OLD and NEW and "
                                   "print every product's figures under both, with the changes.")
    p.add_argument("old", metavar="OLD", help="ID or ID@VERSION")
    p.add_argument("new", metavar="NEW", help="ID or ID@VERSION")
    p.add_argument("--site", required=True, metavar="FILE", help="the site file")
    p.add_argument("--from", dest="start", required=True, metavar="DATE", help="ISO 8601, e.g. 2025-03-01 (site time)")
    p.add_argument("--to", dest="end", required=True, metavar="DATE", help="ISO 8601, end excluded")
    p.add_argument("--store", default="sqlite:tanji.sqlite", metavar="sqlite:PATH",
                   help="the reading store of the accounting service (default sqlite:tanji.sqlite)")
    _json_flag(p)


def _catalogue(args: argparse.Namespace, writing: bool = False) -> FactorCatalogue:
    if args.state_dir is None:
        if writing:
            raise ConfigError("--state-dir", None, "", "an import must be kept where the service reads it",
                              "pass --state-dir DIR, the accounting service's state directory")
        return FactorCatalogue(LedgerStore(":memory:"))
    state = Path(args.state_dir)
    if not state.is_dir():
        raise ConfigError(str(state), None, "", "no such state directory", "pass the accounting service's --state-dir")
    return FactorCatalogue(LedgerStore(state / "ledger.sqlite"))


def _instant(text: str, name: str, tz: Any) -> int:
    from datetime import datetime
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(name, None, "", f"{text!r} is not an ISO 8601 date", "e.g. 2025-03-01 or 2025-03-01T00:00+08:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return int(dt.timestamp() * 1000)


def _print(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "") if r.get(c) is not None else "-").ljust(w)
                        for c, w in zip(columns, widths, strict=True)))


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except AccountingError as exc:  # a bad table, an unknown version, a conflicting import
        print(f"tanji factors: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    action = args.factors_command
    if action == "diff":
        return _diff(args)
    catalogue = _catalogue(args, writing=action == "import")
    if action == "list":
        rows = [{"ref": dataset_ref(r['dataset_id'], r['version']), **r} for r in catalogue.listing({})]
        if args.json:
            json.dump(rows, sys.stdout, ensure_ascii=False, indent=1)
            print()
        else:
            _print([{**r, "regions": len(r["regions"])} for r in rows], ["ref", "gas_basis", "unit", "publication_date", "document_number", "regions",
                          "has_residual_mix", "has_fossil_only", "superseded_by", "origin"])
        return 0
    if action == "show":
        doc = catalogue.show(args.ref)
        if args.json:
            json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
            print()
            return 0
        print(f"{doc['ref']}  ({doc['selection']}, {doc['gas_basis']}, {doc['unit']}, {doc['granularity']})")
        print(f"publisher: {doc['publisher']}\npublished: {doc['publication_date']}\nsource:    {doc['source_reference']}")
        for v in doc.get("verification") or []:
            print(f"verified:  [{v.get('level')}] {v.get('values')}: {v.get('source')}")
        for n in doc.get("not_published") or []:
            print(f"not shipped: {n}")
        for table in ("factors", "residual_mix", "fossil_only"):
            for region, series in (doc.get(table) or {}).items():
                print(f"  {table:14} {region:16} " + "  ".join(f"{p}: {v}" for p, v in sorted(series.items())))
        for name, value in sorted((doc.get("technology_factors") or {}).items()):
            print(f"  {'technology':14} {name:16} {value}")
        for name, value in sorted((doc.get("transmission_distribution") or {}).items()):
            print(f"  {'T&D':14} {name:16} {value}")
        return 0
    # import
    doc = load_table(args.file)
    known = {(d.dataset_id, d.version) for d in catalogue.registry}
    row = catalogue.row(catalogue.add(doc), [])
    row["status"] = "unchanged (already imported with this content)" if (row["dataset_id"], row["version"]) in known else "imported"
    if args.json:
        json.dump(row, sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        print(f"{dataset_ref(row['dataset_id'], row['version'])}: {row['status']}; digest {row['digest'][:12]}; "
              f"a running accounting service loads it at its next start or via POST /api/v1/factors")
    return 0


def _diff(args: argparse.Namespace) -> int:

    from accounting.factors.diff import factor_diff
    from accounting.store.sqlite import SqliteStore
    from tanji.site import load_site

    site = load_site(args.site)
    tz = site.zone
    start, end = _instant(args.start, "--from", tz), _instant(args.end, "--to", tz)
    if end <= start:
        raise ConfigError("--to", None, "", "the period is empty", "--to must be after --from")
    if not args.store.startswith("sqlite:") or not Path(args.store.removeprefix("sqlite:")).is_file():
        raise ConfigError("--store", None, "", f"{args.store!r} is no existing SQLite reading store",
                          "pass the accounting service's --store sqlite:PATH (InfluxDB: use POST /api/v1/factors/diff)")
    catalogue = _catalogue(args)
    view = dataset_for(site, catalogue.registry)
    old, new = (catalogue.resolve(s).for_site(province=view.site_province, uncovered_rule=view.uncovered_rule)
                for s in (args.old, args.new))
    result = factor_diff(site, SqliteStore(Path(args.store.removeprefix("sqlite:"))), old, new,
                         start_ms=start, end_ms=end)
    if args.json:
        json.dump(result, sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0
    print(f"{site.id}: {result['old']['dataset']} -> {result['new']['dataset']} "
          f"(region {result['new']['factor_region']}), {result['readings']} readings")
    rows = []
    for p in result["products"]:
        loc, mkt = p["kgco2e_location"], p["kgco2e_market"]
        rows.append({"product": p["product_id"], "kWh": _fmt(p["energy_kwh"]), "units": _fmt(p["units"]),
                     "location old": _fmt(loc["old"]), "location new": _fmt(loc["new"]),
                     "Δ location %": _fmt(loc["delta_pct"], 2), "market old": _fmt(mkt["old"]),
                     "market new": _fmt(mkt["new"]), "Δ market %": _fmt(mkt["delta_pct"], 2)})
    _print(rows, ["product", "kWh", "units", "location old", "location new", "Δ location %",
                  "market old", "market new", "Δ market %"])
    return 0


def _fmt(value: float | None, digits: int = 3) -> str | None:
    return None if value is None else f"{value:.{digits}f}"
