"""`tanji audit`: export the evidence of a site's footprints as a bundle, and verify a bundle offline.

    tanji audit export --config SITE_FILE --from DATE --to DATE [--site ID] [--window hour|day|month|period]
                       [--store sqlite:PATH|influx] [--state-dir DIR] [--out FILE]
    tanji audit verify BUNDLE [--json]
    tanji audit prune --state-dir DIR --older-than DAYS

`export` reads the accounting service's store and state directory (it may run beside the
service; it writes nothing there) and writes one zip file: the signed batches as they arrived,
the gateways' public keys, the site file and meter profiles, the factor dataset, the
certificates and contracts claimed, the footprints with the evidence they name, and the chain
events of the period. `verify` needs that file only: no service, no network. It checks every
signature and chain link, recomputes each footprint with the engine and says, per footprint,
verified or not and why; it exits 0 only when every footprint verifies. `prune` deletes whole
segments of the InfluxDB store's evidence log (`<state-dir>/evidence`) last written before a
cutoff, in step with the bucket's retention. docs/audit.md explains all three.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from tanji.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = sub.add_parser("export", help="write the audit bundle of a site's footprints over a period",
                       description="Write a self-contained audit bundle (zip) from the accounting service's store.")
    p.add_argument("--config", required=True, metavar="SITE_FILE", help="the site file the service runs with")
    p.add_argument("--site", metavar="ID", help="the site id (default: the site file's)")
    p.add_argument("--from", dest="start", required=True, metavar="DATE", help="ISO 8601, e.g. 2026-03-01 (site time)")
    p.add_argument("--to", dest="end", required=True, metavar="DATE", help="ISO 8601, end excluded")
    p.add_argument("--window", default="day", choices=["hour", "day", "month", "period"],
                   help="one footprint per product per hour, day (default), month, or the whole period")
    p.add_argument("--store", default="sqlite:tanji.sqlite", metavar="sqlite:PATH|influx",
                   help="the service's reading store (default sqlite:tanji.sqlite)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="the service's state directory: checkpoints, ledger and, with --store influx, the signed "
                        "batches' bytes (evidence/); default: beside the SQLite store, or ./tanji-state as the "
                        "service's")
    p.add_argument("--influx-url", default="http://127.0.0.1:8086", metavar="URL",
                   help="InfluxDB URL with --store influx (token in TANJI_INFLUX_TOKEN)")
    p.add_argument("--influx-org", default="tanji", metavar="ORG", help="InfluxDB organisation (default tanji)")
    p.add_argument("--influx-bucket", default="tanji", metavar="BUCKET", help="InfluxDB bucket (default tanji)")
    p.add_argument("--influx-database", metavar="DB", help="database for InfluxQL reads (default: the bucket's name)")
    p.add_argument("--out", metavar="FILE", help="the bundle to write (default <site>-<from>-<to>.tanji-audit.zip)")
    p = sub.add_parser("verify", help="check a bundle offline: signatures, chains, recomputed footprints",
                       description="Verify an audit bundle without a service or network; exit 0 only when "
                                   "every footprint verifies.")
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle written by `tanji audit export`")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = sub.add_parser("prune", help="delete evidence log segments older than the InfluxDB bucket's retention",
                       description="Delete whole segments of the signed batches' bytes (<state-dir>/evidence, the "
                                   "InfluxDB store's evidence log) last written more than --older-than days ago; "
                                   "never the segment being appended to. Safe beside the running service.")
    p.add_argument("--state-dir", required=True, metavar="DIR", help="the accounting service's state directory")
    p.add_argument("--older-than", required=True, type=float, metavar="DAYS",
                   help="the bucket's retention in days: batches whose readings InfluxDB has expired")


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "export":
        return _export(args)
    if args.audit_command == "prune":
        return _prune(args)
    return _verify(args)


def _prune(args: argparse.Namespace) -> int:
    from accounting.store.evidence_log import EvidenceLog

    directory = Path(args.state_dir) / "evidence"
    if not directory.is_dir():
        raise ConfigError("--state-dir", None, "", f"{directory} does not exist",
                          "pass the accounting service's --state-dir (with --store influx it keeps evidence/ there)")
    if args.older_than <= 0:
        raise ConfigError("--older-than", None, "", "must be a positive number of days",
                          "e.g. the bucket's retention: --older-than 730")
    removed = EvidenceLog(directory).prune(args.older_than * 86_400)
    print(f"{directory}: {len(removed)} segment(s) pruned" + "".join(f"\n  {p.name}" for p in removed))
    return 0


def _instant(text: str, name: str, tz: ZoneInfo) -> int:
    from datetime import datetime
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(name, None, "", f"{text!r} is not an ISO 8601 date",
                          "e.g. 2026-03-01 or 2026-03-01T00:00+08:00") from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=tz)).timestamp() * 1000)


def _export(args: argparse.Namespace) -> int:
    from accounting.audit.bundle import export_parts, write_bundle
    from accounting.cli import _store
    from accounting.service import AccountingService
    from accounting.store.checkpoints import CheckpointStore
    from accounting.store.ledger import LedgerStore
    from tanji.site import load_site

    site = load_site(args.config)
    if args.site and args.site != site.id:
        raise ConfigError(args.config, None, "site.id", f"the site file is site {site.id}, not {args.site}",
                          "pass the site file of the site to export")
    tz = site.zone
    start, end = _instant(args.start, "--from", tz), _instant(args.end, "--to", tz)
    if end <= start:
        raise ConfigError("--to", None, "", "the period is empty", "--to must be after --from")
    if args.store.startswith("sqlite:") and not Path(args.store.removeprefix("sqlite:")).is_file():
        raise ConfigError("--store", None, "", f"{args.store!r} is no existing SQLite reading store",
                          "pass the accounting service's --store")
    args.influx_gzip_level = None
    store, state_dir = _store(args)
    checkpoints = state_dir / "checkpoints.sqlite"
    ledger = state_dir / "ledger.sqlite"
    service = AccountingService([site], store, broker_port=1,  # never connected: nothing but reads
                                checkpoints=CheckpointStore(checkpoints) if checkpoints.exists() else None,
                                ledger=LedgerStore(ledger) if ledger.exists() else LedgerStore(":memory:"))
    try:
        service.restore()
        bundle = export_parts(service, site.id, start, end, None if args.window == "period" else args.window)
        out = Path(args.out or f"{site.id}-{args.start}-{args.end}.tanji-audit.zip".replace(":", ""))
        with open(out, "wb") as f:
            write_bundle(bundle, f, out.name)
    finally:
        store.close()
        service.engine_state.close()
        service.ledger.close()
    records = sum(len(w["records"]) for w in bundle.windows)
    signed = sum(1 for b in bundle.batches if b.sig is not None)
    print(f"{out}: site {site.id}, {len(bundle.windows)} window(s), {records} footprint(s), "
          f"{len(bundle.batches)} batches ({signed} signed), {len(bundle.keys)} key(s), "
          f"{len(bundle.claims)} certificate(s), {len(bundle.contracts)} contract(s)")
    print(f"verify it anywhere with: tanji audit verify {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from accounting.audit.verify import utc_minute, verify_bundle

    report = verify_bundle(args.bundle)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, ensure_ascii=False, indent=1)
        print()
        return 0 if report.ok else 1
    d = report.to_dict()
    print(f"bundle {args.bundle}: site {report.site_id}")
    for k in report.keys:
        print(f"  key {k['key_id']} of gateway {k['gateway']}: {k['public_key']}")
    print("  batches: " + ", ".join(f"{n} {status}" for status, n in sorted(d["batches"].items())) or "none")
    for line in [*report.problems, *d["batch_problems"], *report.chain_problems]:
        print(f"  PROBLEM {line}")
    for f in report.footprints:
        word = "VERIFIED" if f.verified else "NOT VERIFIED"
        print(f"{word}  {f.product_id}  {utc_minute(f.start_ms)} – {utc_minute(f.end_ms)}")
        for reason in f.reasons:
            print(f"    because {reason}")
        for note in f.notes:
            print(f"    note: {note}")
    if not report.footprints:
        print("NOT VERIFIED: the bundle holds no footprint")
    print("verified" if report.ok else "NOT verified")
    return 0 if report.ok else 1
