"""YAML config files that remember where each value came from.

Validation errors must name the file and the line (an operator edits the file in nano on
the edge box), so files are composed into PyYAML nodes and every mapping becomes a
`Section` that knows its file, its key path and the line of each key.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tanji.errors import ConfigError

_MISSING = object()


class Section:
    """A mapping from a config file, with lines, typed getters and unknown-key detection."""

    def __init__(self, file: str, path: str, data: dict[str, Any], lines: dict[str, int], line: int | None) -> None:
        self.file = file
        self.path = path
        self.data = data
        self.lines = lines
        self.line = line
        self._used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key, self.line)

    def error(self, key: str, problem: str, fix: str | None = None) -> ConfigError:
        return ConfigError(self.file, self.line_of(key), self._key(key), problem, fix)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _MISSING, *, fix: str | None = None) -> Any:
        """Return data[key] checked against `kind`; a missing key without default is an error."""
        self._used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise ConfigError(self.file, self.line, self._key(key), "required key is missing",
                                  fix or f"add '{key}:' to this section")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(_type_name(k) for k in kinds)
            raise self.error(key, f"expected {names}, got {_type_name(type(value))} {value!r}",
                             fix or f"write {key} as a {names}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None, positive: bool = False) -> float:
        value = self.get(key, float, default)
        if value is None:
            return value
        if positive and not value > 0:
            raise self.error(key, f"must be > 0, got {value}", f"set {key} to a positive number")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}", f"raise {key} to at least {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be <= {maximum}, got {value}", f"lower {key} to at most {maximum}")
        return value

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value = self.get(key, int, default)
        if value is None:
            return value
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}", f"use a value from {minimum}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be <= {maximum}, got {value}", f"use a value up to {maximum}")
        return value

    def choice(self, key: str, choices: tuple[str, ...] | list[str], default: Any = _MISSING) -> str:
        value = self.get(key, str, default)
        if value is not None and value not in choices:
            raise self.error(key, f"unknown value {value!r}", _suggest(value, choices, "use one of"))
        return value

    def section(self, key: str, default: Any = _MISSING, *, fix: str | None = None) -> Section:
        return self.get(key, Section, default, fix=fix)

    def sections(self, key: str, default: Any = _MISSING) -> list[Section]:
        """A list of mappings (e.g. `meters:`), each a Section."""
        items = self.get(key, list, default)
        if items is None:
            return []
        for i, item in enumerate(items):
            if not isinstance(item, Section):
                raise self.error(key, f"item {i} must be a mapping (key: value lines), got {item!r}",
                                 f"write each item of {key} as '- key: value'")
        return items

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def reject_unknown(self, allowed: tuple[str, ...] | list[str] | None = None) -> None:
        """Refuse keys nobody reads: a typo (`pol_period_s`) must not silently fall back to a default."""
        allowed_set = set(allowed) if allowed is not None else self._used
        for key in self.data:
            if key not in allowed_set:
                raise self.error(key, "unknown key", _suggest(key, sorted(allowed_set), "expected one of"))

    def to_plain(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.data.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_plain()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _suggest(value: str, choices: Any, lead: str) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    if close:
        return f"did you mean '{close[0]}'? ({lead}: {', '.join(choices)})"
    return f"{lead}: {', '.join(choices)}"


def _type_name(kind: type) -> str:
    return {Section: "mapping", list: "list", str: "string", int: "integer", float: "number",
            bool: "true/false", type(None): "nothing"}.get(kind, kind.__name__)


def _convert(node: yaml.Node, file: str, path: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        data: dict[str, Any] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node)) if not isinstance(key_node, yaml.ScalarNode) else key_node.value
            key = str(key)
            line = key_node.start_mark.line + 1
            if key in data:
                raise ConfigError(file, line, f"{path}.{key}" if path else key, "duplicate key",
                                  "keep one of the two lines")
            data[key] = _convert(value_node, file, f"{path}.{key}" if path else key)
            lines[key] = line
        return Section(file, path, data, lines, node.start_mark.line + 1)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, file, f"{path}[{i}]") for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node)) if node.tag != "tag:yaml.org,2002:str" else node.value


def parse_yaml(text: str, file: str) -> Section:
    """Parse YAML text into a Section; syntax errors become ConfigErrors with the line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        line, problem, fix = _syntax_error(exc)
        raise ConfigError(file, line, "", f"YAML syntax error: {problem}", fix) from None
    if node is None:
        raise ConfigError(file, 1, "", "the file is empty", "see the sample files in firmware-config/")
    root = _convert(node, file, "")
    if not isinstance(root, Section):
        raise ConfigError(file, 1, "", "the top level must be a mapping (key: value lines)",
                          "see the sample files in firmware-config/")
    return root


def _syntax_error(exc: yaml.YAMLError) -> tuple[int | None, str, str]:
    """The line an operator must edit, the problem, and the fix, from a PyYAML error.

    PyYAML marks where it gave up, which is often the line after the mistake: `name:value`
    (no space) is reported where the next key starts, an unclosed quote or bracket where the
    file or the block ends. Its context mark is where the broken token started, so for those
    errors that is the line to name.
    """
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None) or ""
    line = problem_mark.line + 1 if problem_mark is not None else None
    fix = "check indentation (spaces, not tabs) and that every 'key: value' has a space after the colon"
    if context_mark is not None and (context.startswith("while scanning") or "flow" in context):
        started = context_mark.line + 1
        if line is not None and line != started:
            problem = f"{problem} (line {line}), {context} that starts here"
        line = started
        if "simple key" in context:
            fix = "write 'key: value' with a space after the colon, or quote a value that contains ': '"
        elif "quoted scalar" in context:
            fix = "close the quote opened on this line"
        elif "flow" in context:
            fix = "close the [ or { opened on this line, and separate its items with ', '"
    elif "'\\t'" in problem:
        fix = "indent with spaces, not tabs"
    return line, problem, fix


def load_yaml(path: str | Path) -> Section:
    """Read and parse a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), None, "", f"cannot read the file: {exc.strerror}",
                          "check the path and the file's permissions") from None
    return parse_yaml(text, str(path))
