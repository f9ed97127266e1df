from __future__ import annotations

from pathlib import Path

import pytest

from tanji.site import Site, load_site

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cq_site() -> Site:
    """The shipped battery plant: SDM630 incomer and submeters, two PLC counters, one gateway."""
    return load_site(REPO / "firmware-config" / "sites" / "cq-battery.yaml")
