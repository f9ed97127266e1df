"""Province -> regional grid mapping for mainland China.

The regional grid boundaries follow the MEE 2022 regional factors (seven regions, Southwest
separate from Central). Inner Mongolia is split between the North (Mengxi) and Northeast
(Mengdong) grids in reality; it maps to North here, and a site in Mengdong should set its
grid region explicitly.
"""

from __future__ import annotations

from accounting.errors import UnknownRegionError

#: The grid regions of the MEE regional factors.
GRID_REGIONS = ("North", "Northeast", "East", "Central", "Northwest", "South", "Southwest")
#: Key used by national-average datasets.
NATIONAL = "CN"

_PROVINCES: dict[str, tuple[str, str]] = {
    # pinyin name: (Chinese name, grid region)
    "Beijing": ("北京", "North"),
    "Tianjin": ("天津", "North"),
    "Hebei": ("河北", "North"),
    "Shanxi": ("山西", "North"),
    "Shandong": ("山东", "North"),
    "Inner Mongolia": ("内蒙古", "North"),
    "Liaoning": ("辽宁", "Northeast"),
    "Jilin": ("吉林", "Northeast"),
    "Heilongjiang": ("黑龙江", "Northeast"),
    "Shanghai": ("上海", "East"),
    "Jiangsu": ("江苏", "East"),
    "Zhejiang": ("浙江", "East"),
    "Anhui": ("安徽", "East"),
    "Fujian": ("福建", "East"),
    "Henan": ("河南", "Central"),
    "Hubei": ("湖北", "Central"),
    "Hunan": ("湖南", "Central"),
    "Jiangxi": ("江西", "Central"),
    "Shaanxi": ("陕西", "Northwest"),
    "Gansu": ("甘肃", "Northwest"),
    "Qinghai": ("青海", "Northwest"),
    "Ningxia": ("宁夏", "Northwest"),
    "Xinjiang": ("新疆", "Northwest"),
    "Guangdong": ("广东", "South"),
    "Guangxi": ("广西", "South"),
    "Yunnan": ("云南", "South"),
    "Guizhou": ("贵州", "South"),
    "Hainan": ("海南", "South"),
    "Sichuan": ("四川", "Southwest"),
    "Chongqing": ("重庆", "Southwest"),
    "Tibet": ("西藏", "Southwest"),
}
_ALIASES = {"Xizang": "Tibet", "Nei Mongol": "Inner Mongolia", "Neimenggu": "Inner Mongolia"}
_LOOKUP: dict[str, str] = {}
for _name, (_zh, _region) in _PROVINCES.items():
    _LOOKUP[_name.lower()] = _name
    _LOOKUP[_zh] = _name
for _alias, _name in _ALIASES.items():
    _LOOKUP[_alias.lower()] = _name

#: The 31 mainland provinces, autonomous regions and municipalities (pinyin names).
MAINLAND_PROVINCES = tuple(_PROVINCES)


def canonical_province(name: str) -> str:
    """The canonical pinyin name of a province given in pinyin or Chinese (``重庆`` -> ``Chongqing``)."""
    key = name.strip()
    for suffix in ("省", "市", "自治区", "壮族自治区", "回族自治区", "维吾尔自治区"):
        if key.endswith(suffix) and key[: -len(suffix)] in _LOOKUP:
            key = key[: -len(suffix)]
    found = _LOOKUP.get(key) or _LOOKUP.get(key.lower())
    if found is None:
        raise UnknownRegionError(f"not a mainland Chinese province: {name!r}")
    return found


def grid_region_for_province(name: str) -> str:
    """The regional grid of a mainland province (``Jiangsu`` -> ``East``, ``重庆`` -> ``Southwest``)."""
    return _PROVINCES[canonical_province(name)][1]


def is_mainland(name: str) -> bool:
    """Whether ``name`` is a mainland province (the China mainland grid market boundary)."""
    try:
        canonical_province(name)
    except UnknownRegionError:
        return False
    return True
