"""`tanji audit verify`: check an audit bundle offline and say, per footprint, verified or not and why.

Checks, in order:
1. the bundle's files against its manifest (an accident or an edit after export is named);
2. every batch: its gateway registers its key, the key may vouch for its readings' time
   (rotation, revocation), the Ed25519 signature over its header and readings;
3. every chain: each batch's `prev` is the hash of the batch before it, no two different
   batches share a seq; a batch whose own signature fails but whose hash a verified successor
   names is still authentic (vouched for by the chain), and is reported as such;
4. per footprint: the segments of authentic batches its window rests on give its
   `evidence_root`, with no batch missing or failing inside them; the bundle's factor dataset,
   as the site uses it, has the `dataset_digest` the record names (and, for a dataset shipped
   with Tanji, equals the published values); the certificates and contracts give its
   `instruments_root`; and the engine, run on the authentic readings with those factors and
   instruments, gives the record's figures.

What changed is named: the batch whose signature fails, the certificate whose record differs,
the factor value that differs from the published one, the figure that differs and by how much.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accounting.audit.bundle import Bundle, read_bundle
from accounting.audit.evidence import (
    instrument_leaves,
    segment_leaf,
    segments_from_batches,
    segments_root,
)
from accounting.audit.merkle import merkle_root
from accounting.ingest.signatures import verify_signature
from accounting.store.base import StoredReading
from accounting.store.evidence import Segment, StoredBatch
from tanji import signed_batch
from tanji.config_file import parse_yaml
from tanji.errors import TanjiError
from tanji.gateway_keys import RegisteredKey
from tanji.methods import dataset_ref
from tanji.profile import parse_profile
from tanji.site import Site, parse_site_text

#: Record fields compared with the recomputation (figures; `revision` and `provisional` describe
#: the live engine's history, not the readings).
FIGURES = ("units", "energy_kwh", "kgco2e_location", "kgco2e_market", "kgco2e_per_unit_location",
           "kgco2e_per_unit_market", "share_metered", "share_allocated", "share_estimated",
           "renewable_share", "covered_pv_kwh", "covered_contract_kwh", "covered_gec_kwh",
           "pcf_kgco2e_per_unit_market", "kgco2e_eu_battery_electricity", "kgco2e_per_battery_kwh_eu",
           "kgco2e_per_battery_kwh_market")
REL_TOL = 1e-9


@dataclass
class BatchCheck:
    batch: StoredBatch
    status: str  # verified | vouched | unsigned | bad_signature | unknown_key | key_expired | revoked_key | fork
    detail: str = ""

    @property
    def authentic(self) -> bool:
        return self.status in ("verified", "vouched")

    @property
    def name(self) -> str:
        return f"{self.batch.gateway}#{self.batch.seq}"


@dataclass
class FootprintVerdict:
    product_id: str
    start_ms: int
    end_ms: int
    verified: bool
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    site_id: str
    problems: list[str] = field(default_factory=list)  # the bundle as a whole
    batches: list[BatchCheck] = field(default_factory=list)
    chain_problems: list[str] = field(default_factory=list)
    footprints: list[FootprintVerdict] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.footprints) and all(f.verified for f in self.footprints)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.batches:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site_id, "verified": self.ok, "problems": self.problems, "keys": self.keys,
                "batches": self.counts(),
                "batch_problems": [f"{c.name}: {c.status}: {c.detail}" for c in self.batches
                                   if not c.authentic and c.status != "unsigned"],
                "chain_problems": self.chain_problems,
                "footprints": [{"product_id": f.product_id, "start_ms": f.start_ms, "end_ms": f.end_ms,
                                "verified": f.verified, "reasons": f.reasons, "notes": f.notes}
                               for f in self.footprints]}


class VerifyError(TanjiError):
    """The bundle cannot be verified at all (its site file or profiles do not parse)."""


def _site(bundle: Bundle) -> Site:
    try:
        profiles = {model: parse_profile(parse_yaml(text, f"profiles/{model}.yaml"))
                    for model, text in bundle.profiles.items()}
        return parse_site_text(bundle.site_text, "site.yaml", profiles)
    except TanjiError as exc:
        raise VerifyError(f"the bundle's site file cannot be read: {exc}") from None


def check_batches(site: Site, batches: Sequence[StoredBatch]) -> tuple[list[BatchCheck], list[str]]:
    """Every batch's key and signature, every chain's links; vouching through the chain."""
    keys: dict[str, RegisteredKey] = {k.key_id: k for g in site.gateways for k in g.keys}
    checks = []
    for b in batches:
        if b.sig is None:
            checks.append(BatchCheck(b, "unsigned", "no signature"))
            continue
        key = keys.get(b.key or "")
        if key is None or key.gateway != b.gateway:
            checks.append(BatchCheck(b, "unknown_key", f"key {b.key} is not registered for {b.gateway} in site.yaml"))
            continue
        refusal = key.refusal(b.min_ts_ms, b.max_ts_ms)
        if refusal is not None:
            checks.append(BatchCheck(b, refusal[0], refusal[1]))
            continue
        head = signed_batch.header(b.site, b.gateway, b.seq, b.chain or "", b.key or "", b.prev,
                                   signed_batch.readings_digest(b.readings))
        sig = signed_batch.parse_signature({"alg": signed_batch.ALGORITHM, "key": b.key, "chain": b.chain,
                                            "prev": b.prev, "sig": b.sig})
        if verify_signature(key.raw, sig.value, head):
            checks.append(BatchCheck(b, "verified"))
        else:
            checks.append(BatchCheck(b, "bad_signature", "the signature does not verify: its readings or header "
                                     "were changed after the gateway signed it"))
    problems = []
    chains: dict[tuple[str, str], dict[int, list[BatchCheck]]] = {}
    for c in checks:
        if c.batch.chain is not None:
            chains.setdefault((c.batch.gateway, c.batch.chain), {}).setdefault(c.batch.seq, []).append(c)
    for (gateway, chain), by_seq in sorted(chains.items()):
        for seq in sorted(by_seq):
            copies = by_seq[seq]
            if len({c.batch.hash for c in copies}) > 1:
                problems.append(f"fork: {gateway} chain {chain} has {len(copies)} different batches {seq}")
                for c in copies:
                    if c.status == "verified":
                        c.status, c.detail = "fork", f"another batch {seq} of the same chain exists"
        # vouching: from the newest down, an authentic batch vouches for the one its prev names
        for seq in sorted(by_seq, reverse=True):
            [c] = by_seq[seq][:1]
            prior = by_seq.get(seq - 1)
            if prior is None:
                continue
            p = prior[0]
            if c.batch.prev != p.batch.hash:
                problems.append(f"link broken: {gateway} batch {seq} names {str(c.batch.prev)[:16]}… as its "
                                f"predecessor, the bundle's batch {seq - 1} is {p.batch.hash[:16]}…")
            elif c.authentic and p.status == "bad_signature":
                p.status, p.detail = "vouched", (f"its own signature does not verify, but batch {seq}'s verified "
                                                 "signature names its hash (the signature alone was damaged)")
    return checks, problems


def _readings(checks: Sequence[BatchCheck]) -> list[StoredReading]:
    """The readings of the authentic batches, the first copy of each (meter, ts_ms) by arrival."""
    import json

    rows: dict[tuple[str, int], StoredReading] = {}
    for c in sorted(checks, key=lambda c: (c.batch.received_ms, c.batch.gateway, c.batch.seq)):
        if not c.authentic:
            continue  # unsigned batches carry no readings: they are no evidence
        for r in json.loads(c.batch.readings):
            key = (r["meter"], r["ts_ms"])
            if key not in rows:
                rows[key] = StoredReading(c.batch.site, c.batch.gateway, r["meter"], r["ts_ms"], r["quality"],
                                          {k: v for k, v in r["values"].items() if v is not None},
                                          r.get("value_quality"))
    return sorted(rows.values(), key=lambda r: (r.ts_ms, r.meter))


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=1e-9)


def _dataset_changes(docs: Sequence[dict[str, Any]]) -> list[str]:
    """For bundle datasets Tanji ships too (same id and version): every value that differs."""
    from accounting.factors.dataset import shipped_datasets

    shipped = {(d.dataset_id, d.version): d for d in shipped_datasets()}
    out = []
    for doc in docs:
        ref = shipped.get((str(doc.get("dataset_id")), str(doc.get("version"))))
        if ref is None:
            continue
        for table in ("factors", "residual_mix", "fossil_only"):
            published = {r: {str(k): float(v) for k, v in s.items()} for r, s in getattr(ref, table).items()}
            given = doc.get(table) or {}
            for region in sorted(set(published) | set(given)):
                for period in sorted(set(published.get(region, {})) | set(given.get(region) or {})):
                    a = published.get(region, {}).get(period)
                    b = (given.get(region) or {}).get(period)
                    if a is None or b is None or not _close(a, b):
                        out.append(f"factor dataset {dataset_ref(doc['dataset_id'], doc['version'])}: {table} {region} {period} "
                                   f"is {b} in the bundle, {a} as published (shipped with Tanji)")
        for name in sorted(set(ref.technology_factors) | set(doc.get("technology_factors") or {})):
            a, b = ref.technology_factors.get(name), (doc.get("technology_factors") or {}).get(name)
            if a is None or b is None or not _close(a, b):
                out.append(f"factor dataset {dataset_ref(doc['dataset_id'], doc['version'])}: technology factor {name} is {b} "
                           f"in the bundle, {a} as published")
    return out


def _portfolio(site: Site, claims: list[dict[str, Any]], contracts: list[dict[str, Any]]) -> Any:
    """The site's instruments rebuilt from the bundle's ledger records (no validity re-check: they
    were checked when claimed, and the auditor judges the records themselves)."""
    from accounting.portfolio import Portfolios
    from accounting.store.ledger import LedgerStore

    ledger = LedgerStore(":memory:")
    bundled = {c["contract_id"] for c in contracts}
    for contract in contracts:
        ledger.claim([c for c in claims if c.get("contract_id") == contract["contract_id"]], contract=contract)
    loose = [c for c in claims if c.get("contract_id") not in bundled]
    if loose:
        ledger.claim(loose)
    return Portfolios([site], ledger).portfolio(site.id)


def verify_bundle(path: str | Path) -> Report:
    """Check a bundle; see the module's docstring for what is checked."""
    from accounting.engine.engine import Engine
    from accounting.factors.dataset import FactorRegistry, dataset_from_dict
    from accounting.factors.selection import dataset_for
    from accounting.recompute import readings_arrays
    from accounting.site_topology import site_topology

    bundle = read_bundle(path)
    report = Report(bundle.site_id, problems=list(bundle.problems))
    site = _site(bundle)
    if site.id != bundle.site_id:
        report.problems.append(f"site.yaml is site {site.id}, the manifest says {bundle.site_id}")
    report.keys = [{"gateway": k.gateway, "key_id": k.key_id, "public_key": k.public_key}
                   for g in site.gateways for k in g.keys]
    listed = {(k.get("gateway"), k.get("key_id"), k.get("public_key")) for k in bundle.keys}
    if listed != {(k["gateway"], k["key_id"], k["public_key"]) for k in report.keys}:
        report.problems.append("keys.json does not list the keys site.yaml registers")
    report.batches, report.chain_problems = check_batches(site, [b for b in bundle.batches if b.site == site.id])
    authentic = [c.batch for c in report.batches if c.authentic]
    by_name = {(c.batch.gateway, c.batch.chain, c.batch.seq): c for c in report.batches}
    rows = _readings(report.batches)
    first_signed = min((b.min_ts_ms for b in authentic), default=None)
    try:
        registry = FactorRegistry([dataset_from_dict(d) for d in bundle.datasets])
        dataset = dataset_for(site, registry)
    except Exception as exc:  # noqa: BLE001 - a damaged dataset fails every footprint, with the reason
        dataset, dataset_error = None, f"the bundle's factor dataset cannot be used: {exc}"
    else:
        dataset_error = None
    changed_factors = _dataset_changes(bundle.datasets)
    portfolio = _portfolio(site, bundle.claims, bundle.contracts)
    topology = site_topology(site)
    for w in bundle.windows:
        lo, hi = int(w["start_ms"]), int(w["end_ms"])
        segments = segments_from_batches(authentic, lo, hi)
        root = segments_root(segments) if segments else None
        seg_reasons = _segment_reasons(segments, w.get("segments", []), by_name)
        leaves = instrument_leaves(bundle.claims, bundle.contracts, lo, hi, site.timezone)
        instruments_root = merkle_root(leaves)
        inst_reasons = _instrument_reasons(leaves, w.get("instrument_leaves", []))
        recomputed: dict[str, dict[str, Any]] = {}
        if dataset is not None:
            engine = Engine(topology, dataset, instruments=portfolio)
            arrays = readings_arrays(engine, rows)
            if len(arrays[0]):
                engine.ingest(*arrays)
            recomputed = {f.product_id: f.to_dict() for f in engine.footprints(lo, hi)}
        for record in w.get("records", []):
            v = FootprintVerdict(str(record.get("product_id")), lo, hi, True)
            if record.get("evidence_root") is None:
                v.reasons.append("the record names no evidence (the site does not keep signed batches)")
            elif record["evidence_root"] != root:
                v.reasons.append(f"evidence root: the record names {record['evidence_root'][:16]}…, the bundle's "
                                 f"authentic batches give {str(root)[:16]}…")
                v.reasons += seg_reasons
            elif seg_reasons:
                v.reasons += seg_reasons
            unsigned = sum(1 for c in report.batches if c.status == "unsigned"
                           and c.batch.min_ts_ms < hi and c.batch.max_ts_ms >= lo)
            if unsigned:
                v.reasons.append(f"{unsigned} unsigned batches hold readings of this window: they are no evidence, "
                                 "and the footprint cannot be recomputed from signed readings alone")
            if not record.get("evidence_complete"):
                v.notes.append("the record says its evidence is incomplete (missing or unsigned batches)")
            if dataset_error:
                v.reasons.append(dataset_error)
            elif record.get("dataset_digest") != dataset.digest or record.get("dataset_version") != dataset.version:
                v.reasons.append(f"factor dataset {dataset.ref}: its content (digest {dataset.digest[:16]}…) is not "
                                 f"the dataset the record names ("
                                 f"{dataset_ref(record.get('dataset_id'), record.get('dataset_version'))}, "
                                 f"digest {str(record.get('dataset_digest'))[:16]}…)")
                v.reasons += changed_factors
            if record.get("instruments_root") != instruments_root:
                v.reasons.append("certificates and contracts: their records are not the ones the footprint rests on "
                                 f"(root {instruments_root[:16]}…, the record names "
                                 f"{str(record.get('instruments_root'))[:16]}…)")
                v.reasons += inst_reasons
            fresh = recomputed.get(v.product_id)
            if dataset is not None and fresh is None:
                v.reasons.append("the engine finds no footprint for this product in the bundle's readings")
            elif fresh is not None:
                differ = [f"{name}: the record says {record.get(name)}, recomputed from the bundle: {fresh.get(name)}"
                          for name in FIGURES if name in record and not _close(record.get(name), fresh.get(name))]
                v.reasons += differ
                if differ and first_signed is not None and first_signed > lo:
                    v.reasons.append(f"the bundle's signed readings begin at {utc_minute(first_signed)}, after this "
                                     "window's start: the earlier ones are not in it (deleted by a retention, "
                                     "docs/storage.md, or never signed), so the window cannot be recomputed in full")
            v.verified = not v.reasons
            report.footprints.append(v)
    return report


def utc_minute(ms: int) -> str:
    """An instant as the verification report prints it (UTC, to the minute)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _segment_reasons(segments: list[Segment], exported: list[str], checks: dict) -> list[str]:
    """Name what broke a window's evidence: a batch inside a segment missing or not authentic,
    or a segment that differs from the one exported."""
    out = []
    ours = {segment_leaf(s).decode() for s in segments}
    for leaf in exported:
        if leaf in ours:
            continue
        _, gateway, chain, first, last, _head = leaf.split(" ")
        for seq in range(int(first), int(last) + 1):
            c = checks.get((gateway, chain, seq))
            if c is None:
                out.append(f"batch {gateway}#{seq} (chain {chain}) is missing from the bundle")
            elif not c.authentic:
                out.append(f"batch {gateway}#{seq}: {c.status}: {c.detail}")
        if not out:
            out.append(f"segment {gateway} {chain} {first}..{last} differs from the one the export named")
    for s in segments:
        if s.present != s.last - s.first + 1:
            missing = [q for q in range(s.first, s.last + 1) if (s.gateway, s.chain, q) not in checks]
            out.append(f"{s.gateway} chain {s.chain}: batches {missing[:10]} of {s.first}..{s.last} are not in the bundle")
    return out


def _instrument_reasons(leaves: list[bytes], exported: list[str]) -> list[str]:
    ours = {leaf.decode() for leaf in leaves}
    theirs = set(exported)
    out = []
    by_id = {" ".join(x.split(" ")[:2]): x for x in theirs}
    for leaf in sorted(ours - theirs):
        name = " ".join(leaf.split(" ")[:2])
        out.append(f"{name}: its record was changed" if name in by_id else f"{name}: not among those the footprint rests on")
    ours_ids = {" ".join(x.split(" ")[:2]) for x in ours}
    for leaf in sorted(theirs - ours):
        name = " ".join(leaf.split(" ")[:2])
        if name not in ours_ids:
            out.append(f"{name}: missing from the bundle")
    return out
