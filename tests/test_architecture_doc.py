"""docs/architecture.md is the map of the code: every file or folder it names exists, and every
package of the tree appears on it, so the map cannot silently drift from the territory."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "architecture.md"
ROOTS = ("tanji", "gateway", "simulators", "accounting", "demo", "docker", "firmware-config", "tests",
         "benchmarks", "bin")


def _cited(text: str) -> set[str]:
    """Repository paths the page names in code spans (globs are checked by what they match)."""
    return set(re.findall(rf"`((?:{'|'.join(map(re.escape, ROOTS))})/[^`\s]*)`", text))


def test_every_path_the_map_names_exists() -> None:
    cited = _cited(DOC.read_text(encoding="utf-8"))
    assert len(cited) > 30, cited
    missing = sorted(p for p in cited if not (any(REPO.glob(p)) if "*" in p else (REPO / p).exists()))
    assert not missing, f"docs/architecture.md names what is not in the repository: {missing}"


def test_every_package_is_on_the_map() -> None:
    text = DOC.read_text(encoding="utf-8")
    packages = sorted(str(p.parent.relative_to(REPO)) for root in ("tanji", "gateway", "simulators", "accounting", "demo")
                      for p in (REPO / root).rglob("__init__.py"))
    absent = [p for p in packages if f"`{p}/" not in text and f"`{p}`" not in text and f"{p}/" not in text]
    assert not absent, f"packages docs/architecture.md does not place: {absent}"


def test_the_check_catches_a_stale_path() -> None:
    assert _cited("the lines — `gateway/modbus_client.py`, and `accounting/`") == {
        "gateway/modbus_client.py", "accounting/"}
    assert not (REPO / "gateway" / "modbus_client.py").exists()
