"""Where the CLI's TLS settings come from: flag, else the services' HERALD_TLS_*
variable, else the configuration file; and the mistakes refused before any call."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import tls
from services.cli.errors import UsageError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, variable, _ in tls.SOURCES.values():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("HERALD_CONFIG_FILE", raising=False)


def test_a_flag_beats_the_variable_which_beats_nothing(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HERALD_TLS_CA_FILE", "/from/env.pem")
    monkeypatch.setenv("HERALD_TLS_SERVER_NAME", "herald.internal")

    options = tls.from_environment({"ca_file": "/from/flag.pem", "cert_file": None})

    assert options == tls.TlsOptions(ca_file="/from/flag.pem", server_name="herald.internal")
    assert options.enabled


def test_the_configuration_file_fills_in_when_no_flag_or_variable_does(monkeypatch, tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM)
    config = tmp_path / "herald.toml"
    config.write_text(f'tls_ca_file = "{ca}"\ntls_server_name = "herald.internal"\n')
    monkeypatch.setenv("HERALD_CONFIG_FILE", str(config))

    options = tls.from_environment({})

    assert options == tls.TlsOptions(ca_file=str(ca), server_name="herald.internal")


def test_nothing_given_is_plaintext():
    security = tls.security(tls.from_environment({}))

    assert not security.tls
    assert security.options == ()


def test_a_server_name_is_checked_against_the_certificate_name(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM)

    security = tls.security(tls.TlsOptions(ca_file=str(ca), server_name="herald.internal"))

    assert security.tls
    assert security.options == (("grpc.ssl_target_name_override", "herald.internal"),)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (tls.TlsOptions(cert_file="c.pem"), "--tls-cert and --tls-key go together"),
        (tls.TlsOptions(key_file="k.pem"), "--tls-cert and --tls-key go together"),
        (tls.TlsOptions(server_name="x"), "needs TLS"),
        (tls.TlsOptions(ca_file="/no/such.pem"), "--tls-ca (HERALD_TLS_CA_FILE): cannot read"),
    ],
)
def test_options_that_cannot_work_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tls.security(options)
