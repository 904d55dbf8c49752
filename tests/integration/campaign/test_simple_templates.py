"""Templates of the common shape (text, `{{ name }}`, `{{ name | default: 'x' }}`) are
rendered without Liquid, and what a recipient reads is exactly what Liquid renders,
for every kind of value; anything else is left to Liquid. Pure domain code."""

from __future__ import annotations

from typing import Any

import pytest
from liquid import Environment

from services.campaign.templates import Template, simple_renderer

SIMPLE = [
    "Hi {{ first_name | default: 'there' }}, a deal in {{ city }}",
    '{{first_name|default:"friend"}}!',
    "{{ user.first_name }} ({{ user.email | default: 'no email' }})",
    "{{ profile.name.given }} and text with no tags",
    "{{ a }}{{ b }}",
]
NOT_SIMPLE = [
    "{% if vip %}VIP{% endif %} {{ first_name }}",
    "{{ first_name | upcase }}",
    "{{- first_name -}}",
    "{{ tags.size }} tags",
    "{{ true }} {{ nil }}",
    "{{ a | default: 'x\\ny' }}",
    "a } b {{ c }}",
]
CONTEXTS: list[dict[str, Any]] = [
    {},
    {"first_name": "Ann", "city": "Paris", "a": "x", "b": "y"},
    {"first_name": "", "city": None, "a": " ", "b": "<b>&amp;</b>"},
    {"first_name": 42, "city": 2.5, "a": True, "b": False},
    {"first_name": ["Ann"], "city": {"name": "Oslo"}, "a": 0, "b": None},
    {
        "user": {"first_name": "Zoë", "email": ""},
        "profile": {"name": {"given": "Kim"}},
    },
    {"user": {"first_name": None}, "profile": {"name": "Kim"}},
    {"user": "text", "profile": {"name": {"given": 7}}},
]


@pytest.mark.parametrize("source", SIMPLE + NOT_SIMPLE)
@pytest.mark.parametrize("context", CONTEXTS, ids=range(len(CONTEXTS)))
def test_rendering_matches_liquid(source: str, context: dict[str, Any]) -> None:
    expected = Environment().from_string(source).render(**context)
    template = Template(source)
    assert template.render(context) == expected
    assert template.render(context) == expected  # memoised or not, the same text


def test_only_the_common_shape_skips_liquid() -> None:
    assert all(simple_renderer(source) is not None for source in SIMPLE)
    assert all(simple_renderer(source) is None for source in NOT_SIMPLE)
