"""Who may import whom: the shared core imports no part, parts never import each other.

    tanji/        the shared core (PyYAML and the standard library only)
    gateway/      tanji only, and nothing an edge box cannot carry (no numpy, numba, FastAPI,
                  InfluxDB client)
    simulators/   tanji only
    accounting/   tanji only
    demo/         everything: the one process that holds all parts

Read from the source (every import statement, lazy ones inside functions too), so a new
upward import fails here before it breaks an edge install. Inside accounting/, the HTTP API
reaches the service through its protocol (`accounting.api.types`) only, and its routers share
helpers through modules of their own, never through each other.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PARTS = ("tanji", "gateway", "simulators", "accounting", "demo")
MAY_IMPORT = {
    "tanji": set(),
    "gateway": {"tanji"},
    "simulators": {"tanji"},
    "accounting": {"tanji"},
    "demo": {"tanji", "gateway", "simulators", "accounting"},
}
NOT_ON_THE_EDGE = {"numpy", "numba", "llvmlite", "fastapi", "starlette", "uvicorn", "influxdb_client",
                   "msgspec", "amqtt"}
CORE_THIRD_PARTY = {"yaml"}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (relative imports stay in its own part)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _imported_modules(path: Path) -> set[str]:
    """Full dotted names `path` imports (`from a.b import c` counts as a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _defines_router(path: Path) -> bool:
    return any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "router" for t in node.targets)
               for node in ast.parse(path.read_text(encoding="utf-8")).body)


def _modules(part: str) -> list[Path]:
    return sorted((REPO / part).rglob("*.py"))


@pytest.mark.parametrize("part", PARTS)
def test_a_part_imports_only_the_parts_below_it(part: str) -> None:
    assert _modules(part), f"no modules found in {part}/"
    wrong = {}
    for path in _modules(part):
        above = (_imports(path) & set(PARTS)) - MAY_IMPORT[part] - {part}
        if above:
            wrong[str(path.relative_to(REPO))] = sorted(above)
    assert not wrong, f"{part}/ may import only {sorted(MAY_IMPORT[part]) or 'nothing of the other parts'}: {wrong}"


def test_the_gateway_imports_nothing_an_edge_box_cannot_carry() -> None:
    heavy = {str(p.relative_to(REPO)): sorted(_imports(p) & NOT_ON_THE_EDGE) for p in _modules("gateway")}
    assert not {k: v for k, v in heavy.items() if v}


def test_the_core_needs_pyyaml_and_the_standard_library_only() -> None:
    allowed = set(sys.stdlib_module_names) | CORE_THIRD_PARTY | {"tanji", "__future__"}
    extra = {str(p.relative_to(REPO)): sorted(_imports(p) - allowed) for p in _modules("tanji")}
    assert not {k: v for k, v in extra.items() if v}


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The scanner sees lazy imports inside functions, the way tanji/demo.py once hid its own."""
    module = tmp_path / "m.py"
    module.write_text("def run():\n    from accounting.service import AccountingService\n    import gateway.cli\n")
    assert _imports(module) >= {"accounting", "gateway"}


API = REPO / "accounting" / "api"
#: What the API must not reach past the service protocol into.
BEHIND_THE_SERVICE = ("accounting.service", "accounting.live", "accounting.ingest", "accounting.store",
                      "accounting.factors.dataset", "accounting.factors.catalogue", "accounting.instruments",
                      "accounting.portfolio", "accounting.recompute")


def test_api_routers_share_helpers_through_their_own_modules() -> None:
    routers = {f"accounting.api.{p.stem}" for p in API.glob("*.py") if _defines_router(p)}
    assert {"accounting.api.v1", "accounting.api.reports", "accounting.api.stream"} <= routers
    wrong = {p.name: sorted(_imported_modules(p) & routers) for p in API.glob("*.py") if p.name != "app.py"}
    assert not {k: v for k, v in wrong.items() if v}, "a router imports another router (only app.py assembles them)"


def test_the_api_reaches_the_service_through_its_protocol_only() -> None:
    wrong = {str(p.relative_to(REPO)): sorted(m for m in _imported_modules(p) if m.startswith(BEHIND_THE_SERVICE))
             for p in API.rglob("*.py")}
    assert not {k: v for k, v in wrong.items() if v}



def _undocumented(paths: list[Path]) -> list[str]:
    """Modules whose docstring does not open with a sentence (none, or a bare title)."""
    wrong = []
    for path in paths:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if len((doc or "").strip().split("\n\n")[0].split()) < 4:
            wrong.append(path.name if not path.is_relative_to(REPO) else str(path.relative_to(REPO)))
    return wrong


@pytest.mark.parametrize("part", PARTS)
def test_every_module_says_what_it_is_for(part: str) -> None:
    """A reader names each module's one job from its docstring, so every module has one."""
    wrong = _undocumented(_modules(part))
    assert not wrong, f"modules without a docstring naming their job: {wrong}"


def test_the_docstring_rule_catches_a_bare_module(tmp_path: Path) -> None:
    (tmp_path / "bare.py").write_text("X = 1\n", encoding="utf-8")
    (tmp_path / "titled.py").write_text('"""Helpers."""\n', encoding="utf-8")
    (tmp_path / "said.py").write_text('"""Parses the wire format into readings."""\n', encoding="utf-8")
    assert _undocumented(sorted(tmp_path.glob("*.py"))) == ["bare.py", "titled.py"]
