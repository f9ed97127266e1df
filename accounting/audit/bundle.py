"""The audit bundle: one zip file holding everything a footprint rests on, checkable offline.

    manifest.json      format, site, period, windows, when and by which Tanji; SHA-256 of every other file
    site.yaml          the site file (topology, products, the gateways' registered public keys)
    profiles/*.yaml    the meter profiles the site's meters use (they give the counter channels)
    keys.json          the registered public keys, for the auditor to compare with the plant's records
    batches.jsonl      every signed batch the footprints rest on, one per line, as it arrived:
                       {"site", "gateway", "seq", "received_ms", "sig": {...} | null, "readings": [...]}
                       with `readings` the exact bytes the signature covers (always the last member);
                       an unsigned batch is its record only: `n`, `min_ts_ms`, `max_ts_ms`, no readings
    factors/*.json     the factor dataset versions of the site's dataset
    instruments.json   the certificates claimed and contracts held by the site (ledger records)
    footprints.json    per window: the footprint records as Tanji served them (with their
                       evidence), and the segments and instrument leaves their roots were made of
    chain_events.json  gaps, forks, replays and new chains recorded in the period
    README.txt         how to verify it

`export_parts` gathers the parts from a running service; `write_bundle` writes them; `read_bundle`
reads a bundle back, refusing one whose files do not match its manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from accounting.audit.evidence import instrument_leaves, segment_leaf, window_segments
from accounting.factors.catalogue import dataset_document
from accounting.factors.selection import effective_matching_mode
from accounting.recompute import LOOKAHEAD_MS, LOOKBACK_MS
from accounting.store.evidence import MAX_BATCH_SPAN_MS, ChainEvent, EvidenceStore, StoredBatch
from tanji import signed_batch
from tanji.civil_calendar import window_bounds
from tanji.errors import TanjiError
from tanji.methods import dataset_ref

FORMAT = "tanji-audit-bundle-1"
README = """Tanji audit bundle ({format})

Verify it, with no network and no running service:

    pip install 'tanji[accounting]'
    tanji audit verify {name}

It checks every batch signature against the public keys in site.yaml (compare their ids in
keys.json with the plant's provisioning records), every chain link, the factor dataset and the
certificates each footprint names, and recomputes each footprint from the signed readings.
docs/audit.md (in Tanji's sources) explains the format, the threat model and the checks.
"""


class BundleError(TanjiError):
    """A file that is not a readable audit bundle (or whose files do not match its manifest)."""


@dataclass
class Bundle:
    """The parts of an audit bundle (what `export_parts` gathers and `read_bundle` returns)."""

    site_id: str
    start_ms: int
    end_ms: int
    site_text: str
    profiles: dict[str, str]
    batches: list[StoredBatch]
    datasets: list[dict[str, Any]]
    claims: list[dict[str, Any]]
    contracts: list[dict[str, Any]]
    windows: list[dict[str, Any]]  # {"start_ms", "end_ms", "records", "segments", "instrument_leaves"}
    chain_events: list[dict[str, Any]] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)
    created_ms: int = 0
    tanji_version: str = ""
    problems: list[str] = field(default_factory=list)  # files that did not match the manifest


def batch_line(b: StoredBatch) -> bytes:
    """One line of batches.jsonl: the batch's fields, then its readings as they arrived."""
    sig = None
    if b.sig is not None:
        sig = {"alg": signed_batch.ALGORITHM, "key": b.key, "chain": b.chain, "prev": b.prev, "sig": b.sig}
    head = {"site": b.site, "gateway": b.gateway, "seq": b.seq, "received_ms": b.received_ms, "sig": sig}
    if sig is None:  # an unsigned batch: its record only (accounting keeps no readings of it as evidence)
        head.update(n=b.n, min_ts_ms=b.min_ts_ms, max_ts_ms=b.max_ts_ms)
    text = json.dumps(head, separators=(",", ":"))
    return text[:-1].encode() + b',"readings":' + (b.readings or b"[]") + b"}"


def parse_batch_line(line: bytes) -> StoredBatch:
    """A batches.jsonl line back as a StoredBatch (hash and time span recomputed from the content)."""
    try:
        body = json.loads(line)
        raw = signed_batch.raw_member(line)
        if raw is None or not isinstance(body, dict):
            raise ValueError("no readings")
        readings = body["readings"]
        sig = signed_batch.parse_signature(body["sig"]) if body.get("sig") is not None else None
        site, gateway, seq = str(body["site"]), str(body["gateway"]), int(body["seq"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"batches.jsonl: a line is not a batch ({exc}): {line[:120]!r}") from None
    digest = signed_batch.readings_digest(raw)
    if sig is not None:
        head = sig.header(site, gateway, seq, digest)
    else:
        head = signed_batch.header(site, gateway, seq, "-", "-", None, digest)
    ts = [r.get("ts_ms") for r in readings if isinstance(r, dict) and isinstance(r.get("ts_ms"), int)]
    lo, hi, n = min(ts, default=0), max(ts, default=0), len(readings)
    if sig is None and not readings:  # an unsigned batch's record
        lo, hi, n = int(body.get("min_ts_ms") or 0), int(body.get("max_ts_ms") or 0), int(body.get("n") or 0)
        raw = b""
    return StoredBatch(site, gateway, seq, signed_batch.batch_hash(head), sig.chain if sig else None,
                       sig.key if sig else None, sig.prev if sig else None,
                       body["sig"]["sig"] if sig else None, lo, hi, n, int(body.get("received_ms") or 0), raw)


def write_bundle(bundle: Bundle, out: IO[bytes], name: str = "bundle.zip") -> None:
    files: dict[str, bytes] = {
        "site.yaml": bundle.site_text.encode(),
        "keys.json": _json(bundle.keys),
        "batches.jsonl": b"".join(batch_line(b) + b"\n" for b in bundle.batches),
        "instruments.json": _json({"claims": bundle.claims, "contracts": bundle.contracts}),
        "footprints.json": _json(bundle.windows),
        "chain_events.json": _json(bundle.chain_events),
        "README.txt": README.format(format=FORMAT, name=name).encode(),
    }
    for model, text in sorted(bundle.profiles.items()):
        files[f"profiles/{model}.yaml"] = text.encode()
    for doc in bundle.datasets:
        files[f"factors/{dataset_ref(doc['dataset_id'], doc['version'])}.json"] = _json(doc)
    manifest = {"format": FORMAT, "site": bundle.site_id, "start_ms": bundle.start_ms, "end_ms": bundle.end_ms,
                "created_ms": bundle.created_ms, "tanji": bundle.tanji_version,
                "windows": [[w["start_ms"], w["end_ms"]] for w in bundle.windows],
                "files": {n: hashlib.sha256(data).hexdigest() for n, data in sorted(files.items())}}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        z.writestr("manifest.json", _json(manifest))
        for n, data in sorted(files.items()):
            z.writestr(n, data)


def read_bundle(path: str | Path | IO[bytes]) -> Bundle:
    """Read a bundle; a file whose content does not match the manifest is listed in `problems`."""
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: not a readable audit bundle ({exc})") from None
    with z:
        names = set(z.namelist())
        if "manifest.json" not in names:
            raise BundleError(f"{path}: no manifest.json: not an audit bundle")
        manifest = json.loads(z.read("manifest.json"))
        if manifest.get("format") != FORMAT:
            raise BundleError(f"{path}: format {manifest.get('format')!r}, this Tanji reads {FORMAT}")
        files = {n: z.read(n) for n in names if n != "manifest.json"}
    problems = []
    for n, digest in manifest["files"].items():
        if n not in files:
            problems.append(f"{n} is missing from the bundle")
        elif hashlib.sha256(files[n]).hexdigest() != digest:
            problems.append(f"{n} was changed after export (its SHA-256 is not the manifest's)")
    for n in sorted(set(files) - set(manifest["files"])):
        problems.append(f"{n} was added after export")
    try:
        instruments = json.loads(files.get("instruments.json", b"{}"))
        return Bundle(
            site_id=manifest["site"], start_ms=int(manifest["start_ms"]), end_ms=int(manifest["end_ms"]),
            site_text=files["site.yaml"].decode(),
            profiles={n.removeprefix("profiles/").removesuffix(".yaml"): d.decode()
                      for n, d in files.items() if n.startswith("profiles/")},
            batches=[parse_batch_line(line) for line in files.get("batches.jsonl", b"").splitlines() if line.strip()],
            datasets=[json.loads(d) for n, d in sorted(files.items()) if n.startswith("factors/")],
            claims=instruments.get("claims", []), contracts=instruments.get("contracts", []),
            windows=json.loads(files.get("footprints.json", b"[]")),
            chain_events=json.loads(files.get("chain_events.json", b"[]")),
            keys=json.loads(files.get("keys.json", b"[]")), created_ms=int(manifest.get("created_ms", 0)),
            tanji_version=str(manifest.get("tanji", "")), problems=problems)
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: a part of the bundle is unreadable ({exc})") from None


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, ensure_ascii=False, default=str).encode() + b"\n"


# -- gathering the parts from a running service -------------------------------------------

def matching_span(site: Any, start_ms: int, end_ms: int) -> tuple[int, int]:
    """[start, end) widened to whole matching windows: market-based figures share certificates
    across a civil year (annual matching) or a month (monthly), so recomputing them needs all of it."""
    mode = effective_matching_mode(site)
    if mode in ("annual", "monthly"):
        kind = "year" if mode == "annual" else "month"
        return window_bounds(kind, start_ms, site.zone)[0], window_bounds(kind, end_ms - 1, site.zone)[1]
    return start_ms, end_ms


def split_windows(start_ms: int, end_ms: int, window: str | None, tz: ZoneInfo) -> list[tuple[int, int]]:
    """[start, end) as one window (`None`/`period`) or cut into calendar hours, days or months
    of the site's zone `tz`."""
    if window in (None, "period"):
        return [(start_ms, end_ms)]
    out, t = [], start_ms
    while t < end_ms:
        lo, hi = window_bounds(window, t, tz)
        out.append((max(lo, start_ms), min(hi, end_ms)))
        t = hi
    return out


def export_parts(service: Any, site_id: str, start_ms: int, end_ms: int, window: str | None = None,
                 now_ms: int | None = None) -> Bundle:
    """Everything the footprints of `site_id` over [start_ms, end_ms) rest on, from a running service."""
    from importlib import metadata

    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    site = service.sites[site_id]
    store: EvidenceStore = service.store
    windows = []
    batches: dict[tuple[str, str], StoredBatch] = {}

    def keep(found: Iterable[StoredBatch]) -> None:
        for b in found:
            batches.setdefault((b.gateway, b.hash), b)

    claims, contracts = service.ledger.claims(site_id), service.ledger.contracts(site_id)
    for lo, hi in split_windows(start_ms, end_ms, window, site.zone):
        segments = window_segments(store, site_id, lo, hi) if site.signatures != "off" else []
        for s in segments:
            keep(store.read_chain_batches(site_id, s.gateway, s.chain, s.first, s.last))
        windows.append({"start_ms": lo, "end_ms": hi, "records": service.footprints(site_id, start_ms=lo, end_ms=hi),
                        "segments": [segment_leaf(s).decode() for s in segments],
                        "instrument_leaves": [leaf.decode() for leaf in
                                              instrument_leaves(claims, contracts, lo, hi, site.timezone)]})
    span_lo, span_hi = matching_span(site, start_ms, end_ms)
    keep(store.read_batches(site_id, min(span_lo, start_ms - LOOKBACK_MS) - MAX_BATCH_SPAN_MS,
                            min(max(span_hi, end_ms + LOOKAHEAD_MS), now_ms + LOOKAHEAD_MS)))
    engine = service.engine(site_id)
    registry = service.factor_catalogue.registry
    datasets = [dataset_document(registry.get(engine.dataset.dataset_id, v))
                for v in registry.versions(engine.dataset.dataset_id)]
    profiles = {m.profile.model: Path(m.profile.file).read_text(encoding="utf-8") for m in site.meters}
    keys = [{"gateway": k.gateway, "key_id": k.key_id, "public_key": k.public_key, "valid_from_ms": k.valid_from_ms,
             "valid_until_ms": k.valid_until_ms, "revoked_ms": k.revoked_ms} for g in site.gateways for k in g.keys]
    events: list[ChainEvent] = store.chain_events(site_id, since_ms=span_lo - LOOKBACK_MS)
    try:
        version = metadata.version("tanji")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return Bundle(site_id=site_id, start_ms=start_ms, end_ms=end_ms,
                  site_text=Path(site.file).read_text(encoding="utf-8"), profiles=profiles,
                  batches=sorted(batches.values(), key=lambda b: (b.gateway, b.chain or "", b.seq, b.received_ms)),
                  datasets=datasets, claims=claims, contracts=contracts, windows=windows,
                  chain_events=[e._asdict() for e in events], keys=keys, created_ms=now_ms,
                  tanji_version=version)


def bundle_bytes(bundle: Bundle, name: str = "bundle.zip") -> bytes:
    buf = io.BytesIO()
    write_bundle(bundle, buf, name)
    return buf.getvalue()
