"""`tanji check`: validate a deployment's config files before deploying them.

    tanji check firmware-config/sites/cq-battery.yaml
    tanji check /etc/tanji/sites/*.yaml my-profiles/new-meter.yaml
    tanji check /etc/tanji/sites/                      # every *.yaml in the directory

Each file is a site file, a meter profile or a simulator scenario (told apart by their keys),
and is validated by the same code the services run, so an error here is the error the gateway
or accounting would stop with: file, line, key, problem and fix. Every file is checked (one
bad file does not hide the next), then what only shows across files: two site files with one
site id, or one gateway id in two sites (the gateway id is its broker user and topic level).
Profiles given on the command line join the profile directory's for the site files checked.
Exit status 0 when everything is valid, 2 when anything is not.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tanji.cli import EXIT_CONFIG
from tanji.config_file import Section, load_yaml
from tanji.errors import ConfigError
from tanji.profile import PROFILES_DIR, MeterProfile, load_profiles, parse_profile
from tanji.site import Site, parse_site

#: Files that belong to a part, checked by that part's own parser, reached by name like the
#: subcommands of tanji/cli.py (the core imports no part): file kind → "module:function".
PART_PARSERS = {"scenario": "simulators.scenario:parse_scenario"}


def _part_parser(kind: str):  # noqa: ANN202 - the part's parser, whatever it returns
    module, _, function = PART_PARSERS[kind].partition(":")
    return getattr(importlib.import_module(module), function)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE_OR_DIR",
                        help="site files, meter profiles or scenarios, or directories of them (*.yaml); "
                             "none: only the profile directory")
    parser.add_argument("--profiles", default=str(PROFILES_DIR), metavar="DIR",
                        help="meter profile directory (default: $TANJI_PROFILES_DIR, else the shipped "
                             "firmware-config/profiles)")


@dataclass
class _Report:
    errors: list[ConfigError]
    lines: list[str]

    def fail(self, exc: ConfigError) -> None:
        self.errors.append(exc)


def _expand(names: list[str]) -> list[Path]:
    paths: list[Path] = []
    for name in names:
        path = Path(name)
        paths.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return paths


def _kind(root: Section) -> str:
    if "model" in root:
        return "profile"
    if isinstance(root.data.get("site"), str):
        return "scenario"
    return "site"


def _check_across(sites: list[tuple[Site, Section]], report: _Report) -> None:
    """What no single file shows: ids that must be unique across a deployment."""
    site_ids: dict[str, Section] = {}
    gateway_ids: dict[str, tuple[Site, Section]] = {}
    for site, root in sites:
        site_section = root.section("site")
        first = site_ids.setdefault(site.id, site_section)
        if first is not site_section:
            report.fail(site_section.error("id", f"site id {site.id!r} is also the id of the site in "
                                           f"{first.file}:{first.line_of('id')}",
                                           "give every site its own id (it is the MQTT topic level of its readings)"))
        for g_section, gateway in zip(root.sections("gateways"), site.gateways, strict=True):
            other = gateway_ids.setdefault(gateway.id, (site, g_section))
            if other[1] is not g_section:
                report.fail(g_section.error("id", f"gateway id {gateway.id!r} is also a gateway of site "
                                            f"{other[0].id} ({other[1].file}:{other[1].line_of('id')})",
                                            "give every gateway of a deployment its own id (it is its broker "
                                            "user name and topic level)"))


def check(names: list[str], profiles_dir: str | Path = PROFILES_DIR) -> _Report:
    """Validate every file named (directories: their *.yaml); errors are collected, not raised."""
    report = _Report([], [])
    try:
        profiles: dict[str, MeterProfile] = load_profiles(Path(profiles_dir))
        report.lines.append(f"{profiles_dir}: {len(profiles)} meter profiles OK: {', '.join(sorted(profiles))}")
    except ConfigError as exc:
        report.fail(exc)
        profiles = {}
    parsed: list[tuple[Path, Section]] = []
    for path in _expand(names):
        try:
            parsed.append((path, load_yaml(path)))
        except ConfigError as exc:
            report.fail(exc)
    # Profiles first: a site file may use a profile given next to it on the command line.
    for path, root in parsed:
        if _kind(root) != "profile":
            continue
        try:
            profile = parse_profile(root)
        except ConfigError as exc:
            report.fail(exc)
            continue
        known = profiles.get(profile.model)
        if known is not None and Path(known.file).resolve() != path.resolve():
            report.fail(root.error("model", f"model {profile.model!r} is also defined in {known.file}",
                                   "give each profile file its own model name"))
            continue
        profiles[profile.model] = profile
        report.lines.append(f"{path}: meter profile {profile.model} OK: {len(profile.registers)} registers")
    sites: list[tuple[Site, Section]] = []
    for path, root in parsed:
        kind = _kind(root)
        try:
            if kind == "site":
                site = parse_site(root, profiles)
                sites.append((site, root))
                report.lines.append(f"{path}: site {site.id} OK: {len(site.gateways)} gateways, "
                                    f"{len(site.meters)} meters, {len(site.cost_centres)} cost centres, "
                                    f"{len(site.products)} products")
                report.lines.extend(_replacement_lines(path, site))
            elif kind == "scenario":
                scenario = _part_parser(kind)(root, path.parent)
                report.lines.append(f"{path}: scenario of site {scenario.site.id} OK")
        except ConfigError as exc:
            report.fail(exc)
    _check_across(sites, report)
    return report


def _replacement_lines(path: Path, site: Site) -> list[str]:
    """One line per recorded meter replacement, in the site's time: what the engine will book
    across it (docs/accounting.md §1)."""
    tz = site.zone
    out = []
    for m in site.meters:
        for r in m.replacements:
            when = datetime.fromtimestamp(r.at_ms / 1000, tz).isoformat()
            regs = "; ".join(f"{c} {r.old_final[c]:g} -> {r.new_initial[c]:g}" for c in r.old_final)
            out.append(f"{path}:   meter {m.id} replaced at {when}: {regs} (old final -> new initial)")
    return out


def run(args: argparse.Namespace) -> int:
    report = check(args.files, args.profiles)
    for line in report.lines:
        print(line)
    for exc in report.errors:
        print(f"error: {exc}", file=sys.stderr)
    if report.errors:
        print(f"{len(report.errors)} error(s): nothing was deployed; fix them and run tanji check again",
              file=sys.stderr)
        return EXIT_CONFIG
    return 0
