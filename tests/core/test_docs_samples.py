"""The YAML samples in docs/configuration.md are real, parseable files, not prose."""

from __future__ import annotations

import re
from pathlib import Path

from tanji.config_file import parse_yaml
from tanji.profile import load_profiles, parse_profile
from tanji.site import parse_site

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_yaml_sample_in_the_configuration_doc_parses():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    kinds = []
    for i, block in enumerate(blocks):
        root = parse_yaml(block, f"{DOC.name}#sample{i}")
        if "model" in root:
            profile = parse_profile(root)
            assert profile.register("energy_import_kwh").address == 72
            kinds.append("profile")
        else:
            site = parse_site(root, load_profiles())
            assert site.products[0].counter_meter == "plc"
            kinds.append("site")
    assert sorted(kinds) == ["profile", "site"]
