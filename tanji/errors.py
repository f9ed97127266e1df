"""The one base error of Tanji's shared core, and the config error every part raises.

Operators meet these at start-up, on a box with no debugger: the message must name the
file, the line, the key, what is wrong and how to fix it, in one line.
"""

from __future__ import annotations


class TanjiError(Exception):
    """Base class for errors Tanji raises on purpose (as opposed to bugs)."""


class ConfigError(TanjiError):
    """A configuration file (site file, meter profile, scenario) is invalid."""

    def __init__(
        self, file: str, line: int | None, key: str, problem: str, fix: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.problem = problem
        self.fix = fix
        where = f"{file}:{line}" if line else file
        text = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)


class WireFormatError(TanjiError):
    """A payload does not follow docs/wire-format.md; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")
