"""The profile findings of issue #17: Janitza's all-tariff energy totals, the EM24's RS-485 map."""

from __future__ import annotations

from gateway.read_plan import plan_for_profile
from tanji.profile import load_profiles
from tanji.site import load_site
from tests.gateway.conftest import REPO

PROFILES = load_profiles()


def test_janitza_reads_the_all_tariff_totals_not_rate_1():
    umg = PROFILES["janitza-umg604"]
    assert umg.register("energy_import_kwh").address == 9851, "19068 is 'consumed, rate 1'"
    assert umg.register("energy_export_kwh").address == 9863, "19076 is 'delivered, rate 1'"
    assert len(plan_for_profile(umg)) == 2  # the 19000 block and the energy totals


def test_the_rs485_em24_of_js_electronics_uses_the_rs485_map():
    site = load_site(REPO / "firmware-config" / "sites" / "js-electronics.yaml")
    rs485 = [m for m in site.meters if m.transport == "rtu" and m.profile.vendor == "Carlo Gavazzi"]
    assert rs485 and all(m.profile.model == "carlo-gavazzi-em24-rs485" for m in rs485)
    em24 = PROFILES["carlo-gavazzi-em24-rs485"]
    assert (em24.register("energy_import_kwh").address, em24.register("energy_export_kwh").address) == (0x42, 0x5C)
    assert PROFILES["carlo-gavazzi-em24"].register("energy_import_kwh").address == 0x34  # the E1 (Ethernet) map
