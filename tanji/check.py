"""`tanji check`: validate config files before deploying them, with the same errors the services give."""

from __future__ import annotations

import argparse
from pathlib import Path

from tanji.profile import PROFILES_DIR, load_profiles
from tanji.site import load_site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("site", nargs="?", help="site file to validate (default: only the profiles)")
    parser.add_argument("--profiles", default=str(PROFILES_DIR), help="meter profile directory")


def run(args: argparse.Namespace) -> int:
    profiles = load_profiles(Path(args.profiles))
    print(f"{len(profiles)} meter profiles OK: {', '.join(sorted(profiles))}")
    if args.site:
        site = load_site(args.site, profiles)
        print(f"site {site.id} OK: {len(site.gateways)} gateways, {len(site.meters)} meters, "
              f"{len(site.cost_centres)} cost centres, {len(site.products)} products")
    return 0
