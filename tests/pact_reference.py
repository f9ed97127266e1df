"""The official PACT v3.0.3 schema, read from the shared reference material (never copied here).

`../shared/pact/openapi-3.0.3.yaml` is wbcsd/data-exchange-protocol `spec/v3/openapi.yaml` at
tag v3.0.3, verbatim (see its README there). Tests validate against its `components.schemas`
with JSON Schema 2020-12 (OpenAPI 3.1 schemas are JSON Schema 2020-12), formats checked.
`TANJI_PACT_REFERENCE` may name the directory; otherwise it is looked for beside the
repository and in its parents.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]
FILE = "openapi-3.0.3.yaml"
#: RFC 3339 date-time (what JSON Schema's `date-time` format means).
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = jsonschema.FormatChecker()  # uuid, date, ... built in; date-time and uri added below


@FORMATS.checks("date-time")
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urllib.parse.urlsplit(value)
    return bool(parts.scheme and parts.netloc) and " " not in value


def reference_dir() -> Path:
    candidates = [Path(os.environ["TANJI_PACT_REFERENCE"])] if os.environ.get("TANJI_PACT_REFERENCE") else []
    candidates += [p / "shared" / "pact" for p in REPO.parents] + [Path("/work/shared/pact")]
    for c in candidates:
        if (c / FILE).is_file():
            return c
    raise FileNotFoundError(f"the official PACT schema {FILE} is not in ../shared/pact (looked in "
                            f"{', '.join(map(str, candidates))}); set TANJI_PACT_REFERENCE")


@functools.cache
def spec() -> dict[str, Any]:
    return yaml.safe_load((reference_dir() / FILE).read_text(encoding="utf-8"))


def validator(component: str) -> jsonschema.Draft202012Validator:
    """A validator for `#/components/schemas/<component>` of the official document."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": spec()["components"]}
    return jsonschema.Draft202012Validator(schema, format_checker=FORMATS)


def validate(instance: Any, component: str = "ProductFootprint") -> None:
    errors = sorted(validator(component).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        raise AssertionError(f"not a valid PACT v3 {component}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5]))
