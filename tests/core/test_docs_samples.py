"""The docs match the code: YAML samples parse, cited files exist, commands shown run, routes are listed.

The YAML samples of docs/configuration.md are real site and profile files; every page cites only
files of the repository; every `tanji` command a page shows in a shell block is a valid command
line, `check`, `broker-config` and `--help` ones run as shown, and the status ones exit 1 when
nothing runs; docs/api.md lists every route and /api/v1 query parameter the app serves.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tanji.cli import build_parser
from tanji.config_file import parse_yaml
from tanji.profile import load_profiles, parse_profile
from tanji.site import load_site, parse_site

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


# -- every page: what it cites exists, what it shows runs ---------------------------------------

REPO = DOC.parents[1]
PAGES = sorted([*(REPO / "docs").glob("*.md"), REPO / "README.md", REPO / "docker" / "README.md",
                REPO / "firmware-config" / "mosquitto" / "README.md"])
TOP = ("accounting", "gateway", "simulators", "tanji", "firmware-config", "docker", "docs", "tests", "benchmarks",
       "bin", "demo")
CITED = re.compile(rf"(?<![\w/.$<-])((?:{'|'.join(TOP)})/[\w./-]*[\w/])")
#: The plant the docs deploy as /etc/tanji/site.yaml ("copy the site file to /etc/tanji/site.yaml").
DEPLOYED_SITE = "firmware-config/sites/cq-battery.yaml"


def _prose(text: str) -> str:
    """The page without ```text blocks (samples of error messages cite files on purpose)."""
    return re.sub(r"```text\n.*?```", "", text, flags=re.S)


def _ignored(path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_a_page_cites_only_what_is_in_the_repository(page: Path):
    text = _prose(page.read_text())
    missing = [p for p in CITED.findall(text)
               if not p.startswith("tanji/v1") and not (REPO / p).exists() and not _ignored(p)]
    assert not missing, f"{page.name} cites files that do not exist: {missing}"
    links = [t for t in re.findall(r"\]\(([^)#\s]+)", text) if not re.match(r"[a-z]+:", t)]
    assert not [t for t in links if not (page.parent / t).resolve().is_relative_to(REPO)
                or not (page.parent / t).exists()], f"{page.name} links outside the repository or to nothing"
    # The design contract lives outside the repository: a reader of the repository cannot open it.
    outside = re.findall(r"/work/\S+|\.\./shared\S*|\b(?:ACCOUNTING|DESIGN)\.md\b", text)
    assert not outside, f"{page.name} cites files outside the repository: {outside}"


def _commands() -> list[tuple[str, list[str]]]:
    """Every `tanji ...` line of a shell block of every page, optional [...] parts removed."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```(?:sh|bash)\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                while re.search(r"\[[^\[\]]*\]", line):  # optional parts, nested ones too
                    line = re.sub(r"\[[^\[\]]*\]", "", line)
                if line.startswith("tanji "):
                    argv = shlex.split(line, comments=True)
                    for stop in ("&&", "|", ";", ">"):
                        argv = argv[:argv.index(stop)] if stop in argv else argv
                    out.append((f"{page.relative_to(REPO)}: {line}", argv[1:]))
    return out


COMMANDS = _commands()


def test_the_pages_show_commands():
    assert len(COMMANDS) >= 15 and {a[0] for _, a in COMMANDS} >= {"check", "broker-config", "gateway", "accounting"}


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_command_shown_parses_and_runs_where_it_can(where: str, argv: list[str], tmp_path: Path):
    """Each option shown exists; `check`, `broker-config` and `--help` run as shown (paths of the
    deployed host mapped: /etc/tanji/site.yaml is the shipped plant, outputs go to a temporary dir),
    and the status commands run against nothing running and exit 1 saying why."""
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0 and "--help" in argv, f"{where}: not a valid command line"
    run = [a.replace("/etc/tanji/site.yaml", DEPLOYED_SITE) for a in argv]
    status = "--help" not in argv and argv[:2] in (["gateway", "status"], ["accounting", "status"])
    if argv[0] == "broker-config":
        for flag in ("--out", "--secrets-dir"):
            if flag in run:
                run[run.index(flag) + 1] = str(tmp_path / flag.strip("-"))
    elif status and argv[0] == "accounting":
        # The documented host is not this machine: a local port nothing listens on stands in.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        run[run.index("--url") + 1] = f"http://127.0.0.1:{port}"
    elif status:
        spool = load_site(REPO / DEPLOYED_SITE).gateways[0].spool_path
        if Path(f"{spool}.status.json").exists():
            pytest.skip(f"a gateway of the shipped plant runs on this machine ({spool})")
    elif argv[0] != "check" and "--help" not in argv:
        pytest.skip("runs a service; tests/e2e runs it as docs/deploy.md shows")
    files = [a for a in run[1:] if a.endswith((".yaml", ".yml"))]
    if not all((REPO / f).exists() for f in files):
        pytest.skip(f"names files of a deployment, not of the repository: {files}")
    result = subprocess.run([sys.executable, "-m", "tanji", *run], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    if status:  # down: exit 1 and one line saying why, no traceback
        assert result.returncode == 1 and result.stdout.strip() and "Traceback" not in result.stderr, \
            f"{where}\n{result.stdout}\n{result.stderr}"
        return
    assert result.returncode == 0, f"{where}\n{result.stdout}\n{result.stderr}"


def test_every_api_route_and_its_parameters_are_in_api_md():
    """docs/api.md lists each route of the app (METHOD path) and each query parameter of /api/v1 ones."""
    from accounting.api import create_app
    from tests.api.fake import FakeService

    spec = create_app(FakeService()).openapi()
    lines = [re.sub(r"\{[^}]*\}", "{}", x) for x in (REPO / "docs" / "api.md").read_text().splitlines()]
    problems = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            key = f"{method.upper()} {re.sub(r'{[^}]*}', '{}', path)}"
            found = [x for x in lines if key in x]
            if not found:
                problems.append(f"{key} is not in docs/api.md")
                continue
            if path.startswith("/api/v1/"):
                params = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
                problems += [f"{key}: parameter {p} is not documented" for p in params
                             if not any(f"{p}=" in x for x in found)]
    assert not problems, problems
