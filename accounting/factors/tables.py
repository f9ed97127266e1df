"""Import of a published factor table given as CSV with its provenance (`tanji factors import`).

The format, one file per announcement::

    # dataset_id: cn-mee-co2
    # version: 2024
    # publisher: Ministry of Ecology and Environment (MEE) and National Bureau of Statistics (NBS) of China
    # publication_date: 2026-12-30
    # source_reference: 关于发布2024年电力二氧化碳排放因子的公告 (公告2026年第N号)
    # document_number: 公告2026年第N号
    # source_url: https://www.mee.gov.cn/...
    # verified_from: the announcement's attachment PDF, checked by (name) on (date)
    # unit: kgCO2/kWh
    # gas_basis: co2
    # granularity: annual
    table,region,period,factor
    factors,CN,2024,0.5200
    factors,Jiangsu,2024,0.5700
    residual_mix,CN,2024,0.6000
    fossil_only,CN,2024,0.8200
    technology,wind,,0.0300
    transmission_distribution,excluding_losses,,0.0040

Regions are ``CN``, a grid region (North ... Southwest) or a province (pinyin or Chinese).
Every error names the line. A JSON document in the format of the shipped data files is
accepted as well (`load_table`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from accounting.errors import FactorDatasetError
from accounting.factors.dataset import FactorDataset, dataset_from_dict
from accounting.factors.regions import GRID_REGIONS, NATIONAL, canonical_province, is_mainland

REQUIRED = ("dataset_id", "version", "publisher", "publication_date", "source_reference", "unit",
            "gas_basis", "granularity", "source_url", "verified_from")
OPTIONAL = ("document_number", "document_title", "uncertainty_pct_95", "notes")
TABLES = ("factors", "residual_mix", "fossil_only", "technology", "transmission_distribution")


def _region(name: str, where: str) -> str:
    if name == NATIONAL or name in GRID_REGIONS:
        return name
    if is_mainland(name):
        return canonical_province(name)
    raise FactorDatasetError(f"{where}: unknown region {name!r}; use CN, a grid region "
                             f"({', '.join(GRID_REGIONS)}) or a mainland province")


def parse_table_csv(text: str, name: str = "<csv>") -> dict[str, Any]:
    """The dataset document of a CSV table (see the module docstring); errors name the line."""
    meta: dict[str, str] = {}
    body: list[tuple[int, str]] = []
    for n, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if not sep:
                raise FactorDatasetError(f"{name}:{n}: a provenance line is '# key: value'")
            key = key.strip()
            if key not in REQUIRED + OPTIONAL:
                raise FactorDatasetError(f"{name}:{n}: unknown provenance key {key!r}; "
                                         f"use {', '.join(REQUIRED + OPTIONAL)}")
            meta[key] = value.strip()
        elif line.strip():
            body.append((n, line))
    missing = [k for k in REQUIRED if not meta.get(k)]
    if missing:
        raise FactorDatasetError(f"{name}: provenance missing: {', '.join(missing)} "
                                 "(add '# key: value' lines before the table)")
    if not body or [c.strip() for c in body[0][1].split(",")] != ["table", "region", "period", "factor"]:
        raise FactorDatasetError(f"{name}:{body[0][0] if body else 1}: the table header is 'table,region,period,factor'")
    doc: dict[str, Any] = {k: meta[k] for k in ("dataset_id", "version", "publisher", "publication_date",
                                                  "source_reference", "unit", "gas_basis", "granularity")}
    doc.update(factors={}, residual_mix={}, fossil_only={}, technology_factors={}, transmission_distribution={})
    for n, line in body[1:]:
        where = f"{name}:{n}"
        row = next(csv.reader(io.StringIO(line)))
        if len(row) != 4:
            raise FactorDatasetError(f"{where}: expected 4 columns (table,region,period,factor), got {len(row)}")
        table, region, period, raw = (c.strip() for c in row)
        try:
            value = float(raw)
        except ValueError:
            raise FactorDatasetError(f"{where}: factor {raw!r} is not a number") from None
        if not 0 <= value <= 5:
            raise FactorDatasetError(f"{where}: factor {value} kg/kWh is outside 0..5; check the unit")
        if table in ("factors", "residual_mix", "fossil_only"):
            if not period:
                raise FactorDatasetError(f"{where}: a {table} row needs a period (YYYY or YYYY-MM)")
            series = doc[table].setdefault(_region(region, where), {})
            if period in series:
                raise FactorDatasetError(f"{where}: {region} {period} is given twice")
            series[period] = value
        elif table == "technology":
            doc["technology_factors"][region] = value
        elif table == "transmission_distribution":
            doc["transmission_distribution"][region] = value
        else:
            raise FactorDatasetError(f"{where}: unknown table {table!r}; use {', '.join(TABLES)}")
    doc["document"] = {"title": meta.get("document_title") or meta["source_reference"],
                       "number": meta.get("document_number"), "publishers": [meta["publisher"]],
                       "date": meta["publication_date"], "url": meta["source_url"]}
    doc["verification"] = [{"values": "every value in this file", "level": "imported",
                            "source": meta["verified_from"]}]
    if meta.get("uncertainty_pct_95"):
        doc["uncertainty_pct_95"] = float(meta["uncertainty_pct_95"])
    if meta.get("notes"):
        doc["notes"] = meta["notes"]
    return doc


def load_table(path: str | Path) -> dict[str, Any]:
    """The dataset document of a CSV table or JSON data file, validated (`dataset_from_dict`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FactorDatasetError(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FactorDatasetError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    else:
        doc = parse_table_csv(text, str(path))
    validate_document(doc, str(path))
    return doc


def validate_document(doc: Any, where: str = "<document>") -> FactorDataset:
    """Check a dataset document (types, values, provenance) and return the dataset it makes."""
    ds = dataset_from_dict(doc)
    if not ds.source_reference.strip() or not ds.publisher.strip():
        raise FactorDatasetError(f"{where}: a dataset names its publisher and source")
    for region in (*ds.factors, *ds.residual_mix, *ds.fossil_only):
        if ds.granularity != "hourly":
            _region(region, where)
    return ds
