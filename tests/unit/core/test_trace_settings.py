"""The tracing settings the local trace store added: names, defaults and limits."""

from __future__ import annotations

import pytest

from services.core.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _unset(monkeypatch):
    """Only what each test sets: none of the caller's own tracing configuration."""
    for name in (
        "HERALD_CONFIG_FILE",
        "HERALD_TRACE_EXPORTER",
        "HERALD_TRACE_LOCAL_COPY",
        "HERALD_TRACE_STORE_TTL_SECONDS",
        "HERALD_TRACE_STORE_MAX_SPANS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_keep_spans_locally_for_six_hours_up_to_two_thousand_per_trace():
    settings = load_settings()

    assert settings.trace_exporter == "auto"
    assert settings.trace_local_copy is False
    assert settings.trace_store_ttl_seconds == 6 * 3600
    assert settings.trace_store_max_spans == 2000


def test_the_variables_set_them(monkeypatch):
    monkeypatch.setenv("HERALD_TRACE_EXPORTER", "local")
    monkeypatch.setenv("HERALD_TRACE_LOCAL_COPY", "true")
    monkeypatch.setenv("HERALD_TRACE_STORE_TTL_SECONDS", "600")
    monkeypatch.setenv("HERALD_TRACE_STORE_MAX_SPANS", "50")

    settings = load_settings()

    assert (settings.trace_exporter, settings.trace_local_copy) == ("local", True)
    assert (settings.trace_store_ttl_seconds, settings.trace_store_max_spans) == (600, 50)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HERALD_TRACE_EXPORTER", "jaeger"),
        ("HERALD_TRACE_STORE_TTL_SECONDS", "10"),
        ("HERALD_TRACE_STORE_MAX_SPANS", "0"),
        ("HERALD_TRACE_LOCAL_COPY", "maybe"),
    ],
)
def test_a_bad_value_stops_the_process_naming_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError, match=variable):
        load_settings()
