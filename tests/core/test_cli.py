"""The conventions every `tanji` subcommand follows (tanji/cli.py), tested on the real command."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tanji.cli import SUBCOMMANDS, build_parser, version
from tests.services import free_port

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "firmware-config" / "sites" / "cq-battery.yaml"
SOURCES = ("tanji", "gateway", "accounting", "simulators")


def tanji(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tanji", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=120, **kw)


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command line: `tanji` and each subcommand, at any depth."""
    out, todo = [], [("tanji", build_parser([], load_all=True))]
    while todo:
        name, parser = todo.pop()
        out.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend((f"{name} {sub}", p) for sub, p in action.choices.items())
    return out


def test_every_option_of_every_subcommand_has_help():
    parsers = _parsers()
    assert {name for name, _ in parsers} >= {f"tanji {s}" for s in SUBCOMMANDS}
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, parser in parsers for a in parser._actions
               if not isinstance(a, argparse._SubParsersAction) and (not a.help or a.help == argparse.SUPPRESS)]
    assert not missing, f"options without help text: {missing}"


def test_every_environment_variable_the_code_reads_is_in_some_help():
    read: set[str] = set()
    for package in SOURCES:
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            read |= set(re.findall(r"environ(?:\.get)?[\[(]\"(TANJI_[A-Z_]+)\"", text))
            read |= set(re.findall(r"env=\"(TANJI_[A-Z_]+)\"", text))
    assert "TANJI_INFLUX_TOKEN" in read
    helps = [tanji("--help").stdout] + [tanji(sub, "--help").stdout for sub in SUBCOMMANDS]
    assert not [v for v in sorted(read) if not any(v in h for h in helps)]


def test_version():
    out = tanji("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"tanji {version()}" and version() != "0+unknown"
    assert tanji("check", "--version").stdout == out.stdout


def test_options_in_any_position():
    before = tanji("--log-level", "ERROR", "check", str(SITE))
    after = tanji("check", str(SITE), "--log-level", "error")
    assert before.returncode == after.returncode == 0 and before.stdout == after.stdout
    # A positional after the options (argparse alone takes `status` for an unknown extra argument).
    status = tanji("gateway", "--config", str(SITE), "--spool", "/nonexistent/spool.sqlite", "status")
    assert status.returncode == 1 and "no status at /nonexistent/spool.sqlite.status.json" in status.stdout
    assert "unrecognized arguments" not in status.stderr


def test_a_closed_pipe_ends_quietly():
    """`tanji check ... | head -0`: the reader is gone before the command writes."""
    proc = subprocess.Popen([sys.executable, "-m", "tanji", "check", str(SITE)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert stderr == ""


@pytest.mark.parametrize(("tz", "offset"), [("Asia/Shanghai", "+08:00"), ("UTC", "+00:00")])
def test_log_lines_carry_their_utc_offset(tz, offset):
    """The dashboard shows +08:00; a log line must say which zone its time is in too."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tanji", "simulate", "--model", "eastron-sdm630",
                             "--port", str(port)], stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "TZ": tz})
    try:
        first = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(30)
    assert re.match(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}\{offset} INFO    simulators\.plant: serving tcp",
                    first), first
