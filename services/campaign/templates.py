"""Liquid templates (python-liquid 2): parse at save time, render per recipient.

A template that contains no Liquid markup is kept as a constant and never rendered.
Rendered results are memoised per template on the values of the variables it reads
(bounded), because a campaign renders the same few combinations ("Hi Anna", "Hi
there") for most of its audience; that is what keeps a million-device fan-out within
its time budget.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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


class Template:
    """One compiled text field."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled: Any = None
        self._paths: tuple[tuple[str, ...], ...] = ()
        self._memo: dict[tuple[str, ...], str] = {}
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
