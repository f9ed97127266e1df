"""`tanji factors` and `/api/v1/factors*` as an operator uses them: list, show, import (validated,
append-only), diff on stored readings, market rules and certificate lists over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TABLE = """# dataset_id: cn-mee-co2
# version: 2024-test
# publisher: MEE and NBS (test table)
# publication_date: 2026-12-30
# source_reference: a test table in the format of an announcement
# source_url: https://example.invalid/announcement
# verified_from: typed for this test
# unit: kgCO2/kWh
# gas_basis: co2
# granularity: annual
table,region,period,factor
factors,CN,2024,0.5200
factors,江苏,2024,0.5700
residual_mix,CN,2024,0.6000
fossil_only,CN,2024,0.8200
"""


def tanji(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tanji.cli", *args], capture_output=True, text=True, timeout=120)


def test_every_action_has_help() -> None:
    for action in ("list", "show", "import", "diff"):
        r = tanji("factors", action, "--help")
        assert r.returncode == 0 and "--json" in r.stdout, action


def test_list_show_and_append_only_import(tmp_path: Path) -> None:
    listed = json.loads(tanji("factors", "list", "--json").stdout)
    assert {"cn-mee-co2@2023", "cn-electricity-carbon-footprint@2024"} <= {
        f"{r['dataset_id']}@{r['version']}" for r in listed}
    shown = json.loads(tanji("factors", "show", "cn-mee-co2@2023", "--json").stdout)
    assert shown["factors"]["Jiangsu"] == {"2023": 0.5827} and shown["document"]["number"] == "公告2025年第47号"
    series = json.loads(tanji("factors", "show", "cn-electricity-carbon-footprint", "--json").stdout)
    assert (series["version"], series["selection"]) == ("2023.1+2024", "latest_per_hour")

    table = tmp_path / "t.csv"
    table.write_text(TABLE, encoding="utf-8")
    assert tanji("factors", "import", str(table)).returncode == 2  # no --state-dir: nowhere to keep it
    state = tmp_path / "state"
    state.mkdir()
    r = tanji("factors", "--state-dir", str(state), "import", str(table), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "imported"
    r = tanji("factors", "--state-dir", str(state), "show", "cn-mee-co2@2024-test", "--json")
    assert json.loads(r.stdout)["factors"]["Jiangsu"] == {"2024": 0.57}
    assert json.loads(tanji("factors", "--state-dir", str(state), "import", str(table), "--json").stdout)[
        "status"].startswith("unchanged")
    table.write_text(TABLE.replace("0.5700", "0.5800"), encoding="utf-8")
    r = tanji("factors", "--state-dir", str(state), "import", str(table))
    assert r.returncode == 2 and "new version" in r.stderr  # append-only
    table.write_text(TABLE.replace("factors,江苏,2024,0.5700", "factors,Atlantis,2024,0.5"), encoding="utf-8")
    r = tanji("factors", "--state-dir", str(state), "import", str(table))
    assert r.returncode == 2 and "t.csv:13" in r.stderr and "Atlantis" in r.stderr
    table.write_text(TABLE.replace("# source_url: https://example.invalid/announcement\n", ""), encoding="utf-8")
    r = tanji("factors", "--state-dir", str(state), "import", str(table))
    assert r.returncode == 2 and "source_url" in r.stderr


@pytest.fixture
def plant_app(tmp_path: Path):
    from fastapi.testclient import TestClient

    from accounting.api.app import create_app
    from accounting.service import AccountingService
    from accounting.store.checkpoints import CheckpointStore
    from accounting.store.sqlite import SqliteStore
    from tanji.site import parse_site_text
    from tests.factors.test_rules import SITE

    site = parse_site_text(SITE.format(id="s1", province="Jiangsu", mode="annual", dataset="cn-mee-co2",
                                       market='{uncovered: fossil_only, own_generation_projects: ["PV-1"]}'))
    store = SqliteStore(tmp_path / "r.sqlite")
    svc = AccountingService([site], store, broker_port=1, checkpoints=CheckpointStore(tmp_path / "c.sqlite"))
    with TestClient(create_app(svc, api_token="t")) as client:
        yield client, svc, store


def test_http_api(plant_app) -> None:
    client, svc, store = plant_app
    auth = {"Authorization": "Bearer t"}
    assert any(r["dataset_id"] == "cn-mee-co2" for r in client.get("/api/v1/factors").json())
    assert client.get("/api/v1/factors/cn-mee-co2@2023").json()["fossil_only"] == {"CN": {"2023": 0.8273}}
    rules = client.get("/api/v1/factors/rules", params={"site": "s1"}).json()
    assert (rules["factor_region"], rules["uncovered_basis"], rules["factor_selection"]) == (
        "Jiangsu", "fossil_only", "latest_per_hour")
    assert client.post("/api/v1/factors", content=TABLE, headers={"content-type": "text/csv"}).status_code == 401
    r = client.post("/api/v1/factors", content=TABLE.encode(), headers={**auth, "content-type": "text/csv"})
    assert r.status_code == 201, r.text
    bad = client.post("/api/v1/factors", content=TABLE.replace("0.5200", "abc").encode(),
                      headers={**auth, "content-type": "text/csv"})
    assert bad.status_code == 422 and "request body:12" in bad.json()["detail"]
    csv_list = ("serial,generation_month,technology,province,tradable,project_id,earmark\n"
                "API-1,2099-01,wind,Gansu,true,W-1,\n")
    r = client.post("/api/v1/certificates/import", params={"site": "s1"}, content=csv_list, headers=auth)
    assert r.status_code == 422 and "not valid yet" in r.json()["detail"] and "line 2" in r.json()["detail"]
    diff = client.post("/api/v1/factors/diff", json={"site_id": "s1", "old": "cn-mee-co2@2022",
                                                     "new": "cn-mee-co2@2023", "start": "2025-03-01T00:00:00+08:00",
                                                     "end": "2025-04-01T00:00:00+08:00"})
    assert diff.status_code == 200, diff.text
    assert diff.json()["old"]["factor_region"] == "Jiangsu" and diff.json()["readings"] == 0


def test_diff_on_stored_readings_gives_the_hand_ratio(tmp_path: Path) -> None:
    """A reference month in an SQLite store, diffed 2023.1 → 2024 with the CLI as an operator would."""
    from accounting.store.base import StoredReading
    from accounting.store.sqlite import SqliteStore
    from tests.factors.test_rules import REF_HOURS, REF_MONTH, SITE, H

    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE.format(id="s1", province="Jiangsu", mode="annual",
                                     dataset="cn-electricity-carbon-footprint", market="{}"), encoding="utf-8")
    store = SqliteStore(tmp_path / "r.sqlite")
    rows = []
    for h in range(REF_HOURS + 1):
        t = REF_MONTH + h * H
        rows += [StoredReading("s1", "gw", "incomer", t, "good", {"energy_import_kwh": 100.0 * h}),
                 StoredReading("s1", "gw", "plc-a", t, "good", {"units_total": 10.0 * h})]
    store.write_readings(rows)
    store.close()
    r = tanji("factors", "diff", "cn-electricity-carbon-footprint@2023.1", "cn-electricity-carbon-footprint@2024",
              "--site", str(site_file), "--from", "2025-03-01", "--to", "2025-04-01",
              "--store", f"sqlite:{tmp_path / 'r.sqlite'}", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    [widget] = result["products"]
    assert widget["energy_kwh"] == pytest.approx(100.0 * REF_HOURS)
    loc = widget["kgco2e_location"]
    assert loc["old"] == pytest.approx(100.0 * REF_HOURS * 0.6205)  # 46 165.2 kg
    assert loc["new"] / loc["old"] == pytest.approx(0.5777 / 0.6205, rel=1e-12)
    assert loc["delta_pct"] == pytest.approx(100 * (0.5777 / 0.6205 - 1))  # -6.9 %
    table = tanji("factors", "diff", "cn-mee-co2@2022", "cn-mee-co2@2023", "--site", str(site_file),
                  "--from", "2025-03-01", "--to", "2025-04-01", "--store", f"sqlite:{tmp_path / 'r.sqlite'}")
    assert table.returncode == 0 and "region Jiangsu" in table.stdout and "widget" in table.stdout
