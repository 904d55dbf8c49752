"""Liquid templates (python-liquid 2): parse at save time, render per recipient.

A template that contains no Liquid markup is kept as a constant and never rendered.
Rendered results are memoised per template on the values of the variables it reads
(bounded), because a campaign renders the same few combinations ("Hi Anna", "Hi
there") for most of its audience; that is what keeps a million-device fan-out within
its time budget.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from liquid import Environment
from liquid.exceptions import LiquidError, LiquidSyntaxError

TEMPLATE_SYNTAX_ERROR = "TEMPLATE_SYNTAX_ERROR"
TEMPLATE_RENDER_ERROR = "TEMPLATE_RENDER_ERROR"
MEMO_LIMIT = 50_000

_ENV = Environment()


@dataclass(frozen=True)
class TemplateProblem:
    """Where a template is wrong: 1-based line and column, and what is wrong."""

    line: int
    column: int
    description: str


class TemplateSyntaxError(Exception):
    def __init__(self, problem: TemplateProblem) -> None:
        super().__init__(problem.description)
        self.problem = problem


class TemplateRenderError(Exception):
    pass


def _position(source: str, index: int) -> tuple[int, int]:
    before = source[: max(0, index)]
    line = before.count("\n") + 1
    column = index - (before.rfind("\n") + 1) + 1
    return line, max(1, column)


def _problem(error: LiquidError, source: str) -> TemplateProblem:
    token = getattr(error, "token", None)
    index = getattr(token, "start_index", 0) if token is not None else 0
    line, column = _position(source, int(index or 0))
    return TemplateProblem(line, column, str(getattr(error, "message", "") or error))


# The shape most push texts have: literal text and `{{ name }}` or
# `{{ name | default: 'text' }}` outputs, nothing else.
_OUTPUT = re.compile(
    r"\{\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*"
    r"(?:\|\s*default\s*:\s*(?:'([^']*)'|\"([^\"]*)\")\s*)?\}\}"
)

_LITERALS = frozenset({"true", "false", "nil", "null", "empty", "blank"})
_SPECIAL = frozenset({"size", "first", "last"})  # computed from the value by Liquid


def simple_renderer(source: str) -> Callable[[Mapping[str, Any]], str | None] | None:
    """A plain-Python renderer for templates of that shape, or None for any other.

    It answers only what it renders exactly as Liquid does (text values, and nil or
    missing ones, with or without `default`); for anything else (numbers, booleans,
    lists, objects) it answers None and the caller renders with Liquid. A fan-out
    renders each distinct combination of values once, so this is what a million
    users with different names cost."""
    parts: list[str | tuple[tuple[str, ...], str | None]] = []
    position = 0
    for match in _OUTPUT.finditer(source):
        parts.append(source[position : match.start()])
        default = match.group(2) if match.group(2) is not None else match.group(3)
        parts.append((tuple(match.group(1).split(".")), default))
        position = match.end()
    parts.append(source[position:])
    for part in parts:
        if isinstance(part, str):
            if "{" in part or "}" in part:
                return None  # tags, other filters or whitespace control: Liquid's job
        elif part[0][0] in _LITERALS or _SPECIAL.intersection(part[0]) or "\\" in (part[1] or ""):
            return None  # `{{ true }}`, `{{ tags.size }}`, escapes: Liquid's job

    def render(context: Mapping[str, Any]) -> str | None:
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            path, default = part
            value = resolve(context, path)
            if value is None or value == "":
                out.append(default if default is not None else "")
            elif type(value) is str:
                out.append(value)
            else:
                return None
        return "".join(out)

    return render


class Template:
    """One compiled text field."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled: Any = None
        self._paths: tuple[tuple[str, ...], ...] = ()
        self._memo: dict[tuple[str, ...], str] = {}
        self._simple: Callable[[Mapping[str, Any]], str | None] | None = None
        if "{" not in source:  # no {{ }} and no {% %}: a constant
            return
        try:
            self._compiled = _ENV.from_string(source)
        except LiquidError as error:
            raise TemplateSyntaxError(_problem(error, source)) from None
        self._paths = tuple(
            tuple(str(part) for part in segments)
            for segments in self._compiled.global_variable_segments()
        )
        self._simple = simple_renderer(source)

    @property
    def constant(self) -> bool:
        return self._compiled is None

    def variables(self) -> set[str]:
        return {path[0] for path in self._paths if path}

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        """Every variable path the template reads (its render depends on these only)."""
        return self._paths

    def render(self, context: Mapping[str, Any]) -> str:
        if self._compiled is None:
            return self.source
        if self._simple is not None:
            simple = self._simple(context)
            if simple is not None:
                return simple
        key = tuple(lookup(context, path) for path in self._paths)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        try:
            rendered = str(self._compiled.render(**context))
        except LiquidError as error:
            raise TemplateRenderError(str(getattr(error, "message", "") or error)) from None
        if len(self._memo) < MEMO_LIMIT:
            self._memo[key] = rendered
        return rendered


def lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> str:
    """The memo key of one path: what a render reading it depends on."""
    return json.dumps(resolve(context, path), sort_keys=True, default=str)


def resolve(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = context
    for index, part in enumerate(path):
        if not isinstance(value, Mapping):
            # A string or list with parts left (`city.size`, `tags.first`): Liquid reads
            # those from the value itself, so the whole value is what the render
            # depends on (marked, so it never equals a value at the full path).
            return ["partial", index, value]
        value = value.get(part)
    # A stable, type-preserving key: "1" and 1 render differently in some filters.
    return value


def compile_template(source: str) -> Template:
    return Template(source)


def check_syntax(source: str) -> TemplateProblem | None:
    try:
        Template(source)
    except TemplateSyntaxError as error:
        return error.problem
    return None


__all__ = [
    "LiquidSyntaxError",
    "Template",
    "TemplateProblem",
    "TemplateRenderError",
    "TemplateSyntaxError",
    "check_syntax",
    "compile_template",
]
