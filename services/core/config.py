"""Typed configuration from environment variables and an optional TOML file.

Precedence: environment variables, then the file named by `HERALD_CONFIG_FILE`, then the
defaults below (which run everything on loopback with the embedded Redis). A bad value
stops the process at start-up with one line per problem naming the variable, never at
the first request. docs/configuration.md lists every variable.
"""

from __future__ import annotations

import base64
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "HERALD_"
CONFIG_FILE_VAR = "HERALD_CONFIG_FILE"

DEFAULT_PORTS = {"registration": 50051, "identity": 50052, "campaign": 50053, "delivery": 50054}
DEFAULT_REDIS_PORT = 6390


class ConfigError(Exception):
    """Configuration that cannot work; the message says which variable and why."""


class _TomlFileSource(PydanticBaseSettingsSource):
    """Values from the TOML file named by HERALD_CONFIG_FILE (keys are field names)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get(CONFIG_FILE_VAR, "")
        self.values: dict[str, Any] = {}
        if path:
            try:
                self.values = tomllib.loads(Path(path).read_text())
            except FileNotFoundError as error:
                raise ConfigError(f"{CONFIG_FILE_VAR}: file {path!r} does not exist") from error
            except tomllib.TOMLDecodeError as error:
                raise ConfigError(
                    f"{CONFIG_FILE_VAR}: {path!r} is not valid TOML: {error}"
                ) from error
            unknown = sorted(set(self.values) - set(settings_cls.model_fields))
            if unknown:
                raise ConfigError(
                    f"{CONFIG_FILE_VAR}: unknown keys in {path!r}: {', '.join(unknown)}"
                )

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


class Settings(BaseSettings):
    """Every setting of every Herald process. Each service reads the part it needs."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Redis: a single node (`redis://`, `rediss://`) or a cluster (`redis_cluster = true`).
    redis_url: str = Field(
        default=f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0",
        validation_alias=AliasChoices("REDIS_URL", "HERALD_REDIS_URL", "redis_url"),
    )
    redis_cluster: bool = False
    # Connections per process (per node with a cluster); commands beyond wait for one.
    redis_max_connections: int = Field(default=256, ge=4, le=10_000)

    # Where the gRPC servers listen and where the services find each other.
    host: str = "127.0.0.1"
    registration_port: int = Field(default=DEFAULT_PORTS["registration"], ge=0, le=65535)
    identity_port: int = Field(default=DEFAULT_PORTS["identity"], ge=0, le=65535)
    campaign_port: int = Field(default=DEFAULT_PORTS["campaign"], ge=0, le=65535)
    delivery_port: int = Field(default=DEFAULT_PORTS["delivery"], ge=0, le=65535)
    registration_address: str = f"127.0.0.1:{DEFAULT_PORTS['registration']}"
    identity_address: str = f"127.0.0.1:{DEFAULT_PORTS['identity']}"
    campaign_address: str = f"127.0.0.1:{DEFAULT_PORTS['campaign']}"
    delivery_address: str = f"127.0.0.1:{DEFAULT_PORTS['delivery']}"

    # Server processes per service sharing its port (SO_REUSEPORT): Python runs one
    # core per process, so a busy service uses one process per core it may use.
    processes: int = Field(default=1, ge=1, le=64)

    # Prometheus metrics on http://<host>:<port>/metrics: -1 means the gRPC port + 1000
    # (51051... under `make run`), -2 any free port (tests), 0 turns them off.
    metrics_port: int = Field(default=-1, ge=-2, le=65535)

    # How long in-flight RPCs may run after SIGTERM before they are cancelled.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=600)
    # Servers end each client connection after this long (new replicas get their share
    # of calls); calls in flight then get the grace period. Long streams end with it and
    # their clients reopen them from a cursor.
    connection_max_age_seconds: float = Field(default=300.0, ge=1, le=86_400)
    connection_age_grace_seconds: float = Field(default=30.0, ge=0, le=3_600)

    # Delivery: the AES-256-GCM key that encrypts provider credentials at rest
    # (base64 of 32 random bytes). Required by Delivery; `make run` generates one in .run/.
    credentials_key: str = Field(default="", repr=False)
    # Where the providers are. The defaults are the real services; `make run` and the
    # tests point them at the sandboxes and add the sandboxes' CA as a trust anchor.
    apns_production_origin: str = "https://api.push.apple.com:443"
    apns_development_origin: str = "https://api.sandbox.push.apple.com:443"
    fcm_origin: str = "https://fcm.googleapis.com"
    provider_ca_file: str = ""

    # Callers. With require_api_keys, every RPC (but health and reflection) needs an
    # app's key in `x-api-key` (scope REGISTER or FULL), the operator's `x-admin-key`,
    # or the services' shared `x-herald-internal` key; see services/core/auth.py.
    require_api_keys: bool = False
    admin_key: str = Field(default="", repr=False)
    internal_key: str = Field(default="", repr=False)
    # How long a verified API key is trusted without asking Identity again: a revoked
    # key stops working within this time.
    api_key_cache_seconds: float = Field(default=10.0, ge=0, le=300)

    # TLS on every gRPC listener (and mTLS when tls_client_ca_file is set); tls_ca_file
    # makes the services' calls to each other use TLS, trusting that CA.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    tls_ca_file: str = ""
    tls_server_name: str = ""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Tracing: "auto" exports by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else keeps
    # spans in the local store (Redis) for `herald trace`; "otlp" requires the endpoint;
    # "local" always uses the local store; "console" prints spans; "none" records none.
    trace_exporter: Literal["auto", "otlp", "local", "console", "none"] = "auto"
    # With OTLP, also keep spans in the local store, so `herald trace` shows them without
    # the trace UI (one more Redis write per batch of spans per trace).
    trace_local_copy: bool = False
    # The local store: a trace's spans are kept this long after its latest span arrived,
    # and at most this many per trace (the first ones: the root and the early structure).
    trace_store_ttl_seconds: int = Field(default=6 * 3600, ge=60, le=30 * 86_400)
    trace_store_max_spans: int = Field(default=2_000, ge=10, le=100_000)
    # Fraction of new traces recorded (parent-based: a traced caller is always followed).
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # Whether every Redis command gets a span; off saves CPU on hot paths.
    trace_redis: bool = True
    otlp_endpoint: str = Field(
        default="",
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "HERALD_OTLP_ENDPOINT", "otlp_endpoint"
        ),
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("credentials_key")
    @classmethod
    def _credentials_key(cls, value: str) -> str:
        if value:
            try:
                raw = base64.b64decode(value, validate=True)
            except ValueError:
                raise ValueError("must be base64 (of 32 random bytes)") from None
            if len(raw) != 32:
                raise ValueError(f"must decode to 32 bytes, got {len(raw)}")
        return value

    @field_validator("apns_production_origin", "apns_development_origin", "fcm_origin")
    @classmethod
    def _https_origin(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// origin")
        return value.rstrip("/")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in ("admin_key", "internal_key", "credentials_key"):
            if "REPLACE_ME" in getattr(self, name):
                raise ValueError(f"HERALD_{name.upper()} still holds a template placeholder")
        if self.require_api_keys and len(self.internal_key) < 32:
            raise ValueError(
                "HERALD_REQUIRE_API_KEYS needs HERALD_INTERNAL_KEY (at least 32 characters) "
                "so the services can call each other"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("HERALD_TLS_CERT_FILE and HERALD_TLS_KEY_FILE go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("HERALD_TLS_CLIENT_CA_FILE (mTLS) needs HERALD_TLS_CERT_FILE")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_ca_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"HERALD_{name.upper()}: {path!r} is not a readable file")
        return self

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls))


def _variable_name(location: tuple[Any, ...]) -> str:
    name = str(location[0]) if location else "?"
    field = Settings.model_fields.get(name)
    if field is None:  # pydantic reports the alias that carried the value
        return name
    if isinstance(field.validation_alias, AliasChoices):
        return str(field.validation_alias.choices[0])
    return ENV_PREFIX + name.upper()


# Settings whose values must never be echoed in an error message.
_SECRET_SETTINGS = frozenset(
    {"credentials_key", "admin_key", "internal_key", "redis_url", "REDIS_URL", "HERALD_REDIS_URL"}
)


def _shown_input(location: tuple[Any, ...], value: Any) -> str:
    name = str(location[0]) if location else ""
    return "(value hidden)" if name in _SECRET_SETTINGS else f"(got {value!r})"


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration, or raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        lines = [
            f"{_variable_name(p['loc'])}: {p['msg']} {_shown_input(p['loc'], p.get('input'))}"
            if p["loc"]
            else p["msg"].removeprefix("Value error, ")  # a rule across settings
            for p in error.errors()
        ]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
