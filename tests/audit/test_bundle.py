"""`tanji audit export` writes a self-contained bundle; `tanji audit verify` checks it offline and,
when one reading, one factor value or one certificate in it was changed, fails and names it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from accounting.ingest.subscriber import InboundMessage
from accounting.service import AccountingService
from accounting.store.checkpoints import CheckpointStore
from accounting.store.sqlite import SqliteStore
from tests.audit.batches import T0, plant_payloads, plant_site

REPO = Path(__file__).resolve().parents[2]
TOPIC = "tanji/v1/test-site/gw-1/readings"


def tanji(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tanji", *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bundle")
    site_file, site, key = plant_site(tmp)
    state = tmp / "state"
    state.mkdir()
    service = AccountingService([site], SqliteStore(tmp / "acc.sqlite"), broker_port=1,
                                checkpoints=CheckpointStore(state / "checkpoints.sqlite"))
    service.restore()
    service.add_certificate({"serial": "GEC-TEST-1", "site_id": "test-site", "generation_month": "2026-01",
                             "technology": "wind", "province": "Gansu"})
    payloads = plant_payloads(tmp, key)
    service.pipeline.run_cycle([InboundMessage(TOPIC, p, 0, 0, T0 + 3 * 3_600_000, 0) for p in payloads])
    service.stop()
    out = tmp / "audit.zip"
    r = tanji("audit", "export", "--config", str(site_file), "--store", f"sqlite:{tmp / 'acc.sqlite'}",
              "--state-dir", str(state), "--from", "2026-01-01T00:00+00:00", "--to", "2026-01-01T02:00+00:00",
              "--window", "hour", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "2 window(s), 2 footprint(s)" in r.stdout and "1 certificate(s)" in r.stdout
    return out


def changed(bundle: Path, tmp_path: Path, name_prefix: str, edit) -> Path:
    """A copy of the bundle with one file edited and the manifest updated to match (a careful forger)."""
    out = tmp_path / "changed.zip"
    with zipfile.ZipFile(bundle) as z:
        files = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in files if n.startswith(name_prefix))
    files[name] = edit(files[name])
    manifest = json.loads(files["manifest.json"])
    manifest["files"][name] = hashlib.sha256(files[name]).hexdigest()
    files["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(out, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    return out


def test_an_exported_bundle_verifies_offline(bundle):
    r = tanji("audit", "verify", str(bundle))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("VERIFIED  widget") == 2 and "NOT VERIFIED" not in r.stdout
    report = json.loads(tanji("audit", "verify", str(bundle), "--json").stdout)
    assert report["verified"] and report["batches"]["verified"] + report["batches"].get("vouched", 0) > 0


def test_a_flipped_reading_is_named(bundle, tmp_path):
    def flip(data: bytes) -> bytes:
        lines = data.splitlines()
        lines[1] = lines[1].replace(b'"energy_import_kwh":1', b'"energy_import_kwh":7', 1)
        return b"\n".join(lines) + b"\n"
    r = tanji("audit", "verify", str(changed(bundle, tmp_path, "batches.jsonl", flip)))
    assert r.returncode == 1
    assert "NOT VERIFIED  widget" in r.stdout
    assert "gw-1#1" in r.stdout and "bad_signature" in r.stdout, r.stdout


def test_a_changed_factor_value_is_named(bundle, tmp_path):
    def edit(data: bytes) -> bytes:
        doc = json.loads(data)
        region = "Chongqing" if "Chongqing" in doc["factors"] else next(iter(doc["factors"]))
        period = next(iter(doc["factors"][region]))
        doc["factors"][region][period] = float(doc["factors"][region][period]) * 0.5
        return json.dumps(doc).encode()
    r = tanji("audit", "verify", str(changed(bundle, tmp_path, "factors/", edit)))
    assert r.returncode == 1
    assert "NOT VERIFIED" in r.stdout and "as published" in r.stdout, r.stdout


def test_a_changed_certificate_is_named(bundle, tmp_path):
    def edit(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["claims"][0]["province"] = "Qinghai"
        return json.dumps(doc).encode()
    r = tanji("audit", "verify", str(changed(bundle, tmp_path, "instruments.json", edit)))
    assert r.returncode == 1
    assert "certificate GEC-TEST-1: its record was changed" in r.stdout, r.stdout


def test_an_edit_without_updating_the_manifest_is_named(bundle, tmp_path):
    out = tmp_path / "raw.zip"
    with zipfile.ZipFile(bundle) as z, zipfile.ZipFile(out, "w") as w:
        for n in z.namelist():
            data = z.read(n)
            w.writestr(n, data + b" " if n == "site.yaml" else data)
    r = tanji("audit", "verify", str(out))
    assert r.returncode == 1 and "site.yaml was changed after export" in r.stdout


def test_an_unsigned_batch_travels_as_its_record_only():
    from accounting.audit.bundle import batch_line, parse_batch_line
    from accounting.store.evidence import StoredBatch

    b = StoredBatch("test-site", "gw-1", 7, "ab" * 32, None, None, None, None, T0, T0 + 2000, 3, T0 + 5000, b"")
    back = parse_batch_line(batch_line(b))
    assert (back.seq, back.sig, back.n, back.min_ts_ms, back.max_ts_ms, back.readings) == (7, None, 3, T0, T0 + 2000, b"")
