"""`herald keys` and the CLI against services that require API keys: an operator makes
a register-only key and a full key, callers with the wrong key, app or scope are told
plainly (exit 1, code and reason) and change nothing, and no key is ever echoed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from services.core.server import RunningServer
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token

from .conftest import Result, run_cli

ADMIN = "admin-" + "a" * 40
INTERNAL = "internal-" + "i" * 40
IOS = ["--platform", "ios", "--os-version", "17.4", "--environment", "development"]


@pytest.fixture
async def secured(
    settings, start_services: Callable[..., Awaitable[dict[str, RunningServer]]], redis
) -> dict[str, str]:
    """Registration and Identity with keys required (no cache: revocation shows at once)."""
    secure = settings.model_copy(
        update={
            "require_api_keys": True,
            "admin_key": ADMIN,
            "internal_key": INTERNAL,
            "api_key_cache_seconds": 0.0,
        }
    )
    servers = await start_services(REGISTRATION_SPEC, IDENTITY_SPEC, base=secure)
    return {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}


def _shows_no_key(result: Result, *keys: str) -> None:
    for key in keys:
        assert key not in result.stdout
        assert key not in result.stderr


async def _key(addresses: dict[str, str], app: str, scope: str) -> tuple[str, str]:
    made = await run_cli(
        "keys",
        "create",
        app,
        "--name",
        f"{app}-{scope}",
        "--scope",
        scope,
        "--json",
        addresses=addresses,
        env={"HERALD_ADMIN_KEY": ADMIN},
    )
    assert made.code == 0, made.stderr
    return made.json()["key"], made.json()["api_key"]["api_key_id"]


async def test_keys_create_list_and_revoke_print_the_key_only_once(secured):
    admin = {"HERALD_ADMIN_KEY": ADMIN}
    app = await run_cli(
        "apps", "create", "--id", "shop", "--name", "Shop", addresses=secured, env=admin
    )
    assert app.code == 0, app.stderr

    created = await run_cli(
        "keys", "create", "shop", "--name", "ios-gateway", "--scope", "register",
        addresses=secured, env=admin,
    )  # fmt: skip
    assert created.code == 0, created.stderr
    assert "REGISTER" in created.stdout
    assert "shown once" in created.stdout
    key = created.stdout.strip().splitlines()[-1].strip()
    assert key.startswith("hk_")

    listed = await run_cli("keys", "list", "shop", addresses=secured, env=admin)
    listed_json = await run_cli("keys", "list", "shop", "--json", addresses=secured, env=admin)
    assert listed.code == 0, listed.stderr
    assert "ios-gateway" in listed.stdout
    (entry,) = listed_json.json()["api_keys"]
    assert entry["scope"] == "API_KEY_SCOPE_REGISTER"
    _shows_no_key(listed, key)
    _shows_no_key(listed_json, key)

    works = await run_cli(
        "devices", "register", "shop", "phone-1", *IOS, "--apns-token", new_device_token(),
        addresses=secured, env={"HERALD_API_KEY": key},
    )  # fmt: skip
    revoked = await run_cli(
        "keys", "revoke", "shop", entry["api_key_id"], addresses=secured, env=admin
    )
    after = await run_cli(
        "devices", "register", "shop", "phone-2", *IOS, "--apns-token", new_device_token(),
        "--api-key", key, "--json", addresses=secured,
    )  # fmt: skip
    unknown = await run_cli("keys", "revoke", "shop", "key-nope", addresses=secured, env=admin)
    bad_scope = await run_cli(
        "keys", "create", "shop", "--name", "x", "--scope", "everything", addresses=secured
    )

    assert works.code == 0, works.stderr
    assert revoked.code == 0, revoked.stderr
    assert "revoke_time" in revoked.stdout
    assert after.code == 1
    assert (after.error()["code"], after.error()["reason"]) == (
        "UNAUTHENTICATED",
        "API_KEY_REVOKED",
    )
    _shows_no_key(after, key)
    assert unknown.code == 1
    assert unknown.stderr.startswith("error: NOT_FOUND (API_KEY_NOT_FOUND)")
    assert bad_scope.code == 2
    assert "--scope" in bad_scope.stderr


async def test_wrong_key_wrong_app_and_wrong_scope_are_refused_and_change_nothing(secured):
    admin = {"HERALD_ADMIN_KEY": ADMIN}
    for app in ("shop", "news"):
        made = await run_cli(
            "apps", "create", "--id", app, "--name", app, addresses=secured, env=admin
        )
        assert made.code == 0, made.stderr
    gateway, _ = await _key(secured, "shop", "register")
    backend, _ = await _key(secured, "shop", "full")
    token = new_device_token()
    register = ["devices", "register", "shop", "phone-1", *IOS, "--apns-token", token]

    no_key = await run_cli(*register, addresses=secured)
    wrong_key = await run_cli(*register, "--api-key", "hk_live_" + "x" * 43, addresses=secured)
    wrong_app = await run_cli(
        "devices", "register", "news", "phone-1", *IOS, "--apns-token", token,
        "--api-key", backend, addresses=secured,
    )  # fmt: skip
    wrong_scope = await run_cli(
        "users", "upsert", "kim", "--attr", "city=Paris", "--api-key", gateway, addresses=secured
    )
    app_admin_with_app_key = await run_cli(
        "apps", "create", "--id", "other", "--name", "Other", "--api-key", backend,
        addresses=secured,
    )  # fmt: skip

    denials = {
        "no key": (no_key, "UNAUTHENTICATED (API_KEY_MISSING)"),
        "wrong key": (wrong_key, "UNAUTHENTICATED (API_KEY_INVALID)"),
        "wrong app": (wrong_app, "PERMISSION_DENIED (APP_ACCESS_DENIED)"),
        "wrong scope": (wrong_scope, "PERMISSION_DENIED (API_KEY_SCOPE_INSUFFICIENT)"),
        "not admin": (app_admin_with_app_key, "PERMISSION_DENIED (ADMIN_KEY_REQUIRED)"),
    }
    for what, (result, head) in denials.items():
        assert result.code == 1, what
        assert result.stdout == "", what
        assert result.stderr.startswith(f"error: {head}"), (what, result.stderr)
        _shows_no_key(result, gateway, backend, "hk_live_" + "x" * 43)

    # Nothing was written by the refused calls: no device in either app, no user, no app.
    full = {"HERALD_API_KEY": backend}
    devices = await run_cli("devices", "list", "shop", "--json", addresses=secured, env=full)
    # The other app's devices are the operator's to read: the wrong-app call aimed there.
    news_devices = await run_cli("devices", "list", "news", "--json", addresses=secured, env=admin)
    user = await run_cli("users", "get", "kim", addresses=secured, env=full)
    apps = await run_cli("apps", "list", "--json", addresses=secured, env=admin)
    assert devices.code == 0, devices.stderr
    assert devices.json()["devices"] == []
    assert news_devices.code == 0, news_devices.stderr
    assert news_devices.json()["devices"] == []
    assert user.code == 1
    assert user.stderr.startswith("error: NOT_FOUND (USER_NOT_FOUND)")
    assert sorted(a["app_id"] for a in apps.json()["apps"]) == ["news", "shop"]

    # The register-only key does what a mobile gateway needs, on its own app.
    registered = await run_cli(*register, "--api-key", gateway, addresses=secured)
    assert registered.code == 0, registered.stderr


async def test_exporting_and_deleting_users_take_the_admin_key(secured):
    """Users are shared by the apps: an app's key reads and writes one user, but export
    (every user) and delete (the user's devices in every app are unbound) are the
    operator's."""
    admin = {"HERALD_ADMIN_KEY": ADMIN}
    secrets = {}
    for app in ("shop", "news"):
        made = await run_cli(
            "apps", "create", "--id", app, "--name", app, "--json", addresses=secured, env=admin
        )
        assert made.code == 0, made.stderr
        secrets[app] = made.json()["client_secret"]
    backend, _ = await _key(secured, "shop", "full")
    full = {"HERALD_API_KEY": backend}
    upserted = await run_cli(
        "users", "upsert", "kim", "--email", "kim@example.com", addresses=secured, env=full
    )
    assert upserted.code == 0, upserted.stderr
    for app in ("shop", "news"):
        registered = await run_cli(
            "devices", "register", app, f"{app}-phone", *IOS, "--apns-token", new_device_token(),
            "--user-id", "kim", "--client-secret", secrets[app], addresses=secured, env=admin,
        )  # fmt: skip
        assert registered.code == 0, registered.stderr

    export_with_app_key = await run_cli("users", "export", "--all", addresses=secured, env=full)
    delete_with_app_key = await run_cli("users", "delete", "kim", addresses=secured, env=full)
    for what, result in (("export", export_with_app_key), ("delete", delete_with_app_key)):
        assert result.code == 1, what
        assert result.stdout == "", what
        assert result.stderr.startswith("error: PERMISSION_DENIED (ADMIN_KEY_REQUIRED)"), (
            what,
            result.stderr,
        )
        _shows_no_key(result, backend)

    # Nothing changed: kim is whole and still bound in both apps.
    state = await run_cli("users", "state", "kim", "--json", addresses=secured, env=admin)
    assert state.code == 0, state.stderr
    assert sorted(e["push_token"]["app_id"] for e in state.json()["entries"]) == ["news", "shop"]
    # The app's key sees kim (the shared profile) and its own app's device only.
    own_state = await run_cli("users", "state", "kim", "--json", addresses=secured, env=full)
    assert [e["push_token"]["device_id"] for e in own_state.json()["entries"]] == ["shop-phone"]

    exported = await run_cli("users", "export", "--all", addresses=secured, env=admin)
    assert exported.code == 0, exported.stderr
    [line] = exported.stdout.splitlines()
    assert '"kim@example.com"' in line
    deleted = await run_cli("users", "delete", "kim", addresses=secured, env=admin)
    again = await run_cli("users", "delete", "kim", addresses=secured, env=admin)
    allowed = await run_cli(
        "users", "delete", "kim", "--allow-missing", "--json", addresses=secured, env=admin
    )
    assert deleted.code == 0, deleted.stderr
    assert deleted.stdout.strip() == "user kim deleted; 2 device(s) unbound"
    assert again.code == 1
    assert again.stderr.startswith("error: NOT_FOUND (USER_NOT_FOUND)")
    assert allowed.code == 0, allowed.stderr
    assert allowed.json() == {"deleted": False, "unbound_device_count": 0}
    news_device = await run_cli(
        "devices", "get", "news", "news-phone", "--json", addresses=secured, env=admin
    )
    assert news_device.json()["user_id"] == ""
