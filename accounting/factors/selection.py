"""How a site picks its factor and its market-based rules, and how results disclose them.

A site file names a dataset (``factor_dataset: id`` or ``id@version``; China's electricity
carbon footprint factor by default). ``id`` alone means *the latest published factor for each
hour*: every published version of the dataset forms one series (`FactorRegistry.series`), and
each hour takes the factor of its own year once that is published, else the newest earlier
one. ``id@version`` pins one version. Within the dataset, the site's province comes first
where a provincial factor is published, then its grid region, then the national factor.
The site's market settings (`tanji.site.Market`) decide what unmatched energy gets and whether
hourly matching is exempted; every result names them.
"""

from __future__ import annotations

from collections.abc import Mapping

from accounting.factors.dataset import FactorDataset, FactorRegistry, default_registry
from accounting.factors.regions import canonical_province, is_mainland
from tanji.methods import dataset_ref
from tanji.site import Site

#: The dataset of a site file that names none: product footprints under GB/T 24067 need the
#: life-cycle (carbon footprint) factor, not the combustion-only CO2 one.
DEFAULT_DATASET = "cn-electricity-carbon-footprint"


def dataset_for(site: Site, registry: FactorRegistry | None = None) -> FactorDataset:
    """The factor dataset as ``site`` uses it (selection, province, uncovered-energy rule)."""
    ds = (registry or default_registry()).resolve(site.factor_dataset or DEFAULT_DATASET)
    province = canonical_province(site.province) if is_mainland(site.province) else None
    return ds.for_site(province=province, uncovered_rule=site.market.uncovered)  # type: ignore[arg-type]


def effective_matching_mode(site: Site) -> str:
    """The matching mode the engine uses: the site's, or its exemption mode when the site
    matches hourly and its declared annual consumption is below the exemption threshold."""
    m = site.market
    if (site.matching_mode == "hourly" and m.hourly_exemption_mwh is not None
            and m.annual_consumption_mwh is not None and m.annual_consumption_mwh < m.hourly_exemption_mwh):
        return m.exempt_matching_mode
    return site.matching_mode


def market_rules(site: Site) -> dict[str, object]:
    """The site's market-based settings as disclosed beside its results (API, label, docs)."""
    m = site.market
    mode = effective_matching_mode(site)
    return {"matching_mode": site.matching_mode, "effective_matching_mode": mode,
            "hourly_exemption": (None if m.hourly_exemption_mwh is None else
                                 {"threshold_mwh_per_year": m.hourly_exemption_mwh,
                                  "declared_annual_consumption_mwh": m.annual_consumption_mwh,
                                  "exempt_matching_mode": m.exempt_matching_mode,
                                  "applied": mode != site.matching_mode}),
            "uncovered": m.uncovered,
            "legacy_contracts_signed_before": m.legacy_contracts_signed_before,
            "own_generation_projects": list(m.own_generation_projects)}


_SELECTION = {"latest_per_hour": "latest published factor for each hour",
              "pinned": "pinned version"}
_UNCOVERED = {"residual_mix": "residual mix (national average excluding market-traded non-fossil electricity)",
              "fossil_only": "fossil-only factor", "grid_average": "grid average (no residual mix)"}


def factor_rule_text(fp: Mapping[str, object]) -> str:
    """One line naming the factor and the rule of a footprint record, for labels and reports."""
    selection = _SELECTION.get(str(fp.get("factor_selection")), str(fp.get("factor_selection")))
    return (f"{dataset_ref(fp.get('dataset_id'), fp.get('dataset_version'))} · region {fp.get('factor_region')} · "
            f"{fp.get('gas_basis')} · {selection}")


def uncovered_rule_text(fp: Mapping[str, object]) -> str:
    """What the unmatched energy of a footprint record got, in words."""
    basis = str(fp.get("uncovered_basis"))
    return f"unmatched energy: {_UNCOVERED.get(basis, basis)}"


def exemption_text(site: Site) -> str:
    """`` (hourly exemption: ...)`` when the site's hourly-matching exemption applies, else ``""``."""
    m = site.market
    if effective_matching_mode(site) == site.matching_mode:
        return ""
    return (f" (hourly-matching exemption: declared {m.annual_consumption_mwh:g} MWh/yr "
            f"< {m.hourly_exemption_mwh:g} MWh/yr)")
