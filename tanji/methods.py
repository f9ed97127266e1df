"""How a site accounts: matching modes, sharing keys and factor dataset references.

Written in the site file (`tanji.site`) and understood by the engine (`accounting.topology`),
so both take them from here.
"""

from __future__ import annotations

#: How market instruments (PV, contracts, certificates) are matched to consumption: over the
#: year, the month, or hour by hour (ACCOUNTING.md §3).
MATCHING_MODES = ("annual", "monthly", "hourly")
#: How utility energy or the unmetered remainder is shared among production lines: pro rata to
#: their metered energy, to units produced, or by declared fixed shares.
SHARING_KEYS = ("energy", "units", "fixed")


def dataset_ref(dataset_id: object, versions: object = None) -> str:
    """A factor dataset reference from its id and version(s): the inverse of `parse_dataset_ref`.

    `versions` is one version (``"2022"``), a series already joined (``"2021+2022"``), a
    tuple of versions, or None/empty for the bare id (the latest published factor per hour).

    >>> dataset_ref("cn-mee-regional-co2", "2022")
    'cn-mee-regional-co2@2022'
    >>> dataset_ref("cn-mee-regional-co2", ("2021", "2022"))
    'cn-mee-regional-co2@2021+2022'
    >>> dataset_ref("cn-electricity-carbon-footprint")
    'cn-electricity-carbon-footprint'
    """
    joined = "+".join(str(v) for v in versions) if isinstance(versions, tuple | list) else versions
    return f"{dataset_id}@{joined}" if joined not in (None, "") else str(dataset_id)


def parse_dataset_ref(ref: str) -> tuple[str, tuple[str, ...]]:
    """A factor dataset reference → (dataset id, versions).

    ``id``: no version, i.e. the latest published factor for each hour; ``id@version``: that
    version only (pinned); ``id@v1+v2``: the series of exactly those versions.

    >>> parse_dataset_ref("cn-mee-regional-co2@2022")
    ('cn-mee-regional-co2', ('2022',))
    >>> parse_dataset_ref("cn-electricity-carbon-footprint")
    ('cn-electricity-carbon-footprint', ())
    """
    dataset_id, _, versions = ref.strip().partition("@")
    return dataset_id, tuple(v for v in versions.split("+") if v)
