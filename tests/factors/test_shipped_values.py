"""Every shipped factor value, typed here from the published tables, against its data file.

The tables below were typed from the sources each data file names in ``verification`` (for
2023 CO2 and 2024 footprint factors: the announcements' attachment PDFs; for the others the
CPCD transcription, see the files). A value that differs, is missing, or is shipped without a
row here fails; so does a data file that does not name its document and sources.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest

from accounting.factors import MAINLAND_PROVINCES, shipped_datasets

PROVINCES_ZH = ["北京", "天津", "河北", "山西", "内蒙古", "辽宁", "吉林", "黑龙江", "上海", "江苏", "浙江", "安徽",
                "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "广西", "海南", "重庆", "四川", "贵州",
                "云南", "陕西", "甘肃", "青海", "宁夏", "新疆"]

# 公告2025年第47号 attachment, 表3 (in the table's order, Tibet not published)
PROV_2023 = [0.5554, 0.6796, 0.6516, 0.6634, 0.6479, 0.4878, 0.4671, 0.5229, 0.5737, 0.5827, 0.4974, 0.6553,
             0.4211, 0.5836, 0.6191, 0.5897, 0.4044, 0.4976, 0.4419, 0.4476, 0.3648, 0.5581, 0.1564, 0.5683,
             0.1333, 0.6335, 0.4471, 0.1796, 0.6187, 0.6021]
# 2022 provincial (CPCD), same order
PROV_2022 = [0.5580, 0.7041, 0.7252, 0.7096, 0.6849, 0.5626, 0.4932, 0.5368, 0.5849, 0.5978, 0.5153, 0.6782,
             0.4092, 0.5752, 0.6410, 0.6058, 0.4364, 0.4900, 0.4403, 0.4044, 0.4184, 0.5227, 0.1404, 0.4989,
             0.1073, 0.6558, 0.4772, 0.1567, 0.6423, 0.6231]
# 2021 provincial (CPCD), same order
PROV_2021 = [0.5688, 0.7355, 0.7901, 0.7222, 0.7025, 0.5876, 0.5629, 0.6342, 0.5834, 0.6451, 0.5422, 0.7075,
             0.4711, 0.5835, 0.6838, 0.6369, 0.3672, 0.5138, 0.4715, 0.5154, 0.4524, 0.4743, 0.1255, 0.5182,
             0.1235, 0.6336, 0.4955, 0.1326, 0.6546, 0.6577]
REGIONS = ["North", "Northeast", "East", "Central", "Northwest", "South", "Southwest"]  # 华北 东北 华东 华中 西北 南方 西南
REG = {"2021": [0.7120, 0.6012, 0.5992, 0.5354, 0.5951, 0.4326, 0.2113],
       "2022": [0.6776, 0.5564, 0.5617, 0.5395, 0.5857, 0.3869, 0.2268],
       "2023": [0.6361, 0.5122, 0.5500, 0.5271, 0.5543, 0.4042, 0.2472]}
# national (表1), excluding market-traded non-fossil (表4), fossil-only (表5)
NAT = {"2021": (0.5568, 0.5942, 0.8426), "2022": (0.5366, 0.5856, 0.8325), "2023": (0.5306, 0.6096, 0.8273)}
PROV = {"2021": PROV_2021, "2022": PROV_2022, "2023": PROV_2023}


def _co2_full(year: str) -> dict:
    nat, res, fossil = NAT[year]
    factors = {"CN": nat, **dict(zip(REGIONS, REG[year], strict=True))}
    from accounting.factors import canonical_province
    factors.update({canonical_province(zh): v for zh, v in zip(PROVINCES_ZH, PROV[year], strict=True)})
    return {"factors": factors, "residual_mix": {"CN": res}, "fossil_only": {"CN": fossil}}


FOOTPRINT_TECH_2023 = {"coal": 0.9440, "gas": 0.4792, "hydro": 0.0143, "nuclear": 0.0065, "wind": 0.0336,
                       "solar_pv": 0.0545, "concentrated_solar": 0.0313, "biomass": 0.0457}
# 2024 announcement attachment, 表2 and 表3
FOOTPRINT_TECH_2024 = {"coal": 0.9240, "gas": 0.4503, "hydro": 0.0141, "nuclear": 0.0065, "wind": 0.0324,
                       "solar_pv": 0.0520, "concentrated_solar": 0.0312, "biomass": 0.0404}
AR5 = {"wind_onshore": 0.011, "wind_offshore": 0.012, "solar_pv_utility": 0.048, "solar_pv_rooftop": 0.041,
       "hydro": 0.024, "nuclear": 0.012, "biomass": 0.230, "geothermal": 0.038, "concentrated_solar": 0.027}

EXPECTED: dict[tuple[str, str], dict] = {
    ("cn-mee-co2", "2021"): _co2_full("2021"),
    ("cn-mee-co2", "2022"): _co2_full("2022"),
    ("cn-mee-co2", "2023"): _co2_full("2023"),
    ("cn-mee-national-co2", "2021"): {"factors": {"CN": 0.5568}},
    ("cn-mee-national-co2", "2022"): {"factors": {"CN": 0.5366}, "residual_mix": {"CN": 0.5856}},
    ("cn-mee-national-co2", "2023"): {"factors": {"CN": 0.5306}, "residual_mix": {"CN": 0.6096},
                                      "fossil_only": {"CN": 0.8273}},
    ("cn-mee-regional-co2", "2022"): {"factors": dict(zip(REGIONS, REG["2022"], strict=True))},
    ("cn-mee-regional-co2", "2023"): {"factors": dict(zip(REGIONS, REG["2023"], strict=True))},
    ("cn-electricity-carbon-footprint", "2023"): {"factors": {"CN": 0.6205}, "technology_factors": AR5},
    ("cn-electricity-carbon-footprint", "2023.1"): {
        "factors": {"CN": 0.6205}, "technology_factors": FOOTPRINT_TECH_2023,
        "transmission_distribution": {"excluding_losses": 0.0036}},
    ("cn-electricity-carbon-footprint", "2024"): {
        "factors": {"CN": 0.5777}, "technology_factors": FOOTPRINT_TECH_2024,
        "transmission_distribution": {"excluding_losses": 0.0046, "including_losses": 0.0327}},
}


def _documents() -> dict[tuple[str, str], dict]:
    folder = resources.files("accounting.factors") / "data"
    docs = [json.loads(f.read_text(encoding="utf-8")) for f in folder.iterdir() if f.name.endswith(".json")]
    return {(d["dataset_id"], d["version"]): d for d in docs}


def test_every_shipped_dataset_is_checked_here() -> None:
    assert set(_documents()) == set(EXPECTED)
    assert {(d.dataset_id, d.version) for d in shipped_datasets()} == set(EXPECTED)


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_every_value_equals_the_published_table(key: tuple[str, str]) -> None:
    doc, want = _documents()[key], EXPECTED[key]
    year = key[1][:4]
    for table in ("factors", "residual_mix", "fossil_only"):
        got = {region: series for region, series in doc.get(table, {}).items()}
        assert {r: s[year] for r, s in got.items()} == want.get(table, {}), table
        assert all(list(s) == [year] for s in got.values()), f"{table}: one period, the data year"
    assert doc.get("technology_factors", {}) == want.get("technology_factors", {})
    assert doc.get("transmission_distribution", {}) == want.get("transmission_distribution", {})


def test_provincial_tables_cover_every_province_but_tibet_and_say_so() -> None:
    for year in ("2021", "2022", "2023"):
        doc = _documents()[("cn-mee-co2", year)]
        provinces = set(doc["factors"]) & set(MAINLAND_PROVINCES)
        assert set(MAINLAND_PROVINCES) - provinces == {"Tibet"}
        assert any("Tibet" in n for n in doc["not_published"])


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_every_data_file_names_its_document_and_sources(key: tuple[str, str]) -> None:
    doc = _documents()[key]
    document = doc["document"]
    assert document["title"].startswith("关于发布") and document["date"][:4] in ("2024", "2025")
    assert document["publishers"] and ("number" in document)
    assert document.get("number") or document.get("number_note"), "a missing number is said so"
    assert doc["publisher"] and doc["publication_date"] and doc["source_reference"]
    assert doc["verification"], "how the values were verified"
    for v in doc["verification"]:
        assert v["values"] and v["level"] and v["source"]


def test_unverifiable_values_are_not_shipped_and_are_named() -> None:
    docs = _documents()
    fp2023 = docs[("cn-electricity-carbon-footprint", "2023.1")]
    assert "including_losses" not in fp2023["transmission_distribution"]
    assert any("including losses" in n for n in fp2023["not_published"])
    assert "geothermal" not in fp2023["technology_factors"]
    assert docs[("cn-electricity-carbon-footprint", "2023")]["superseded_by"] == "2023.1"
