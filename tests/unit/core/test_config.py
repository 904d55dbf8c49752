"""Configuration: defaults, environment, the optional TOML file, and clear failures."""

from __future__ import annotations

import pytest

from services.core.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "REDIS_URL",
        "HERALD_REDIS_URL",
        "HERALD_CONFIG_FILE",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_run_everything_on_loopback_with_the_embedded_redis():
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:6390/0"
    assert [settings.port_of(s) for s in ("registration", "identity", "campaign", "delivery")] == [
        50051,
        50052,
        50053,
        50054,
    ]
    assert settings.identity_address == "127.0.0.1:50052"


def test_environment_variables_override_defaults(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6379/2")
    monkeypatch.setenv("HERALD_DELIVERY_PORT", "6000")
    monkeypatch.setenv("HERALD_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.redis_url == "redis://cache.internal:6379/2"
    assert settings.delivery_port == 6000
    assert settings.log_level == "DEBUG"


def test_the_config_file_is_read_and_the_environment_wins_over_it(monkeypatch, tmp_path):
    path = tmp_path / "herald.toml"
    path.write_text('redis_url = "redis://from-file:6379/0"\ncampaign_port = 7000\n')
    monkeypatch.setenv("HERALD_CONFIG_FILE", str(path))
    monkeypatch.setenv("HERALD_CAMPAIGN_PORT", "7001")
    settings = load_settings()
    assert settings.redis_url == "redis://from-file:6379/0"
    assert settings.campaign_port == 7001


def test_every_bad_variable_is_named_in_one_error(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "http://wrong")
    monkeypatch.setenv("HERALD_REGISTRATION_PORT", "eighty")
    monkeypatch.setenv("HERALD_SHUTDOWN_GRACE_SECONDS", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "REDIS_URL: Value error, must start with redis://" in message
    assert "HERALD_REGISTRATION_PORT: Input should be a valid integer" in message
    assert "HERALD_SHUTDOWN_GRACE_SECONDS: Input should be greater than or equal to 0" in message


def test_the_credentials_key_must_be_32_bytes_of_base64(monkeypatch):
    monkeypatch.setenv("HERALD_CREDENTIALS_KEY", "c2hvcnQ=")
    with pytest.raises(
        ConfigError, match="HERALD_CREDENTIALS_KEY: Value error, must decode to 32 bytes, got 5"
    ):
        load_settings()
    monkeypatch.setenv("HERALD_CREDENTIALS_KEY", "not base64!")
    with pytest.raises(ConfigError, match="HERALD_CREDENTIALS_KEY: Value error, must be base64"):
        load_settings()


def test_a_bad_setting_value_is_not_echoed_when_it_is_a_secret(monkeypatch):
    monkeypatch.setenv("HERALD_CREDENTIALS_KEY", "c2VjcmV0LXNlY3JldA==")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "c2VjcmV0LXNlY3JldA==" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("redis_url = ", "is not valid TOML"),
        ('redis_uri = "redis://x"', "unknown keys in"),
    ],
)
def test_a_bad_config_file_fails_fast(monkeypatch, tmp_path, content, expected):
    path = tmp_path / "herald.toml"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("HERALD_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError, match=expected):
        load_settings()
