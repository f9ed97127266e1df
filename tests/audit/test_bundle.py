"""`tanji audit export` writes a self-contained bundle; `tanji audit verify` checks it offline and,
when one reading, one factor value or one certificate in it was changed, fails and names it."""

from __future__ import annotations

import hashlib
import json
import os
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


def tanji(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "TANJI_INFLUX_TOKEN": "t"}
    return subprocess.run([sys.executable, "-m", "tanji", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


def _store(kind: str, tmp: Path, state: Path, request) -> tuple[object, list[str]]:
    """The store the service writes and the `--store` options `tanji audit export` reads it with."""
    if kind == "sqlite":
        return SqliteStore(tmp / "acc.sqlite"), ["--store", f"sqlite:{tmp / 'acc.sqlite'}"]
    from accounting.store.influx import InfluxStore
    influx = request.getfixturevalue("influx_session")
    db = f"bundle_{tmp.name}".replace("-", "_")
    influx.create_database(db)
    store = InfluxStore(influx.url, token="t", org="tanji", bucket=db, spill_dir=state / "influx-spill",
                        evidence_dir=state / "evidence")  # as `tanji accounting --store influx` makes it
    return store, ["--store", "influx", "--influx-url", influx.url, "--influx-bucket", db]


@pytest.fixture(scope="module", params=["sqlite", "influx"])
def bundle(tmp_path_factory, request) -> Path:
    tmp = tmp_path_factory.mktemp("bundle")
    site_file, site, key = plant_site(tmp)
    state = tmp / "state"
    state.mkdir()
    store, store_args = _store(request.param, tmp, state, request)
    service = AccountingService([site], store, broker_port=1,
                                checkpoints=CheckpointStore(state / "checkpoints.sqlite"))
    service.restore()
    service.add_certificate({"serial": "GEC-TEST-1", "site_id": "test-site", "generation_month": "2026-01",
                             "technology": "wind", "province": "Gansu"})
    payloads = plant_payloads(tmp, key)
    service.pipeline.run_cycle([InboundMessage(TOPIC, p, 0, 0, T0 + 3 * 3_600_000, 0) for p in payloads])
    service.stop()
    out = tmp / "audit.zip"
    period = ["--from", "2026-01-01T00:00+00:00", "--to", "2026-01-01T02:00+00:00", "--window", "hour"]
    if request.param == "influx":
        # InfluxDB holds the batches' records, not their bytes: those are in the state directory's
        # evidence log, so an export without the service's --state-dir says where to look
        points = store.query("SELECT * FROM batch")
        fields = set(points[0]["columns"])
        assert "ref" in fields and not any(f.startswith("r") and f[1:].isdigit() for f in fields), fields
        assert (state / "evidence" / "evidence-000001.log").stat().st_size > 0
        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        r = tanji("audit", "export", "--config", str(site_file), *store_args, "--state-dir", str(elsewhere),
                  *period, "--out", str(tmp / "none.zip"), cwd=tmp)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert "does not exist: pass the accounting service's --state-dir" in r.stderr, r.stderr
    r = tanji("audit", "export", "--config", str(site_file), *store_args, "--state-dir", str(state), *period,
              "--out", str(out))
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


def test_a_recorded_meter_replacement_travels_in_the_bundle_and_verifies(tmp_path):
    """The incomer replaced at poll 50 (old final 1,099 kWh, new initial 6.0): with the record in
    the site file the engine books the same energy as without a replacement, the bundle carries
    the record (site.yaml) and its recomputation agrees; without the record it would not."""
    import yaml

    site_file, _, key = plant_site(tmp_path)
    doc = yaml.safe_load(site_file.read_text())
    swap_ms = T0 + 50 * 60_000 - 30_000  # between polls 49 (1,098 kWh) and 50
    [incomer] = [m for m in doc["gateways"][0]["meters"] if m["id"] == "incomer"]
    incomer["replacements"] = [{"at": "2026-01-01T00:49:30+00:00", "old_final": {"energy_import_kwh": 1099.0},
                                "new_initial": {"energy_import_kwh": 6.0}}]
    site_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    from tanji.site import load_site
    site = load_site(site_file)
    assert site.meter("incomer").replacements[0].at_ms == swap_ms
    state = tmp_path / "state"
    state.mkdir()
    service = AccountingService([site], SqliteStore(tmp_path / "acc.sqlite"), broker_port=1,
                                checkpoints=CheckpointStore(state / "checkpoints.sqlite"))
    service.restore()
    payloads = plant_payloads(tmp_path, key, incomer_replaced_at=50)
    service.pipeline.run_cycle([InboundMessage(TOPIC, p, 0, 0, T0 + 3 * 3_600_000, 0) for p in payloads])
    _, kwh = service.engine("test-site").hourly_energy("incomer", "energy_import_kwh", T0, T0 + 2 * 3_600_000)
    assert list(kwh) == [120.0, 120.0]  # 2 kWh a minute, the replacement booked exactly
    service.stop()
    out = tmp_path / "audit.zip"
    r = tanji("audit", "export", "--config", str(site_file), "--store", f"sqlite:{tmp_path / 'acc.sqlite'}",
              "--state-dir", str(state), "--from", "2026-01-01T00:00+00:00", "--to", "2026-01-01T02:00+00:00",
              "--window", "hour", "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = tanji("audit", "verify", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("VERIFIED  widget") == 2 and "NOT VERIFIED" not in r.stdout
    # the same bundle with the record taken out of its site file: the recomputed figures differ
    stripped = changed(out, tmp_path, "site.yaml", lambda b: yaml.safe_dump(
        {**yaml.safe_load(b), "gateways": [{**g, "meters": [{k: v for k, v in m.items() if k != "replacements"}
                                                             for m in g["meters"]]}
                                           for g in yaml.safe_load(b)["gateways"]]}, sort_keys=False).encode())
    r = tanji("audit", "verify", str(stripped))
    assert r.returncode != 0 and "NOT VERIFIED" in r.stdout, r.stdout
    # read as a counter reset (the new meter's 7.0 kWh booked whole): 125 kWh, not the 120 recorded
    assert "energy_kwh: the record says 120.0, recomputed from the bundle: 125.0" in r.stdout, r.stdout
