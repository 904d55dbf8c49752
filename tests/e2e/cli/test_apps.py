"""`herald apps`: create (the secret once), get, list, rotate-secret, delete, and errors."""

from __future__ import annotations

from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token

from .conftest import create_app, run_cli


async def test_create_get_list_and_rotate(stack):
    addresses = await stack(IDENTITY_SPEC)

    created = await run_cli(
        "apps",
        "create",
        "--id",
        "shop",
        "--name",
        "Shop",
        "--time-zone",
        "Europe/Paris",
        addresses=addresses,
    )
    scripted = await run_cli(
        "apps", "create", "--id", "news", "--name", "News", "--json", addresses=addresses
    )
    shown = await run_cli("apps", "get", "shop", addresses=addresses)
    as_json = await run_cli("--json", "apps", "get", "shop", addresses=addresses)
    listed = await run_cli("apps", "list", "--json", addresses=addresses)
    rotated = await run_cli("apps", "rotate-secret", "shop", "--overlap", "0", addresses=addresses)

    assert created.code == 0, created.stderr
    assert "App created" in created.stdout
    assert "shown once" in created.stdout
    secret_line = created.stdout.splitlines()[-1].strip()
    assert len(secret_line) >= 40  # the 32-byte url-safe secret itself
    assert scripted.code == 0
    assert scripted.json()["app"]["app_id"] == "news"
    assert len(scripted.json()["client_secret"]) >= 40
    assert shown.code == 0
    assert "Europe/Paris" in shown.stdout
    assert secret_line not in shown.stdout  # a secret is never shown again
    assert as_json.json()["display_name"] == "Shop"
    assert "client_secret" not in as_json.json()
    assert [a["app_id"] for a in listed.json()["apps"]] == ["news", "shop"]
    assert rotated.code == 0
    assert "New client secret" in rotated.stdout
    assert secret_line not in rotated.stdout


async def test_server_errors_show_code_reason_message_and_violations(stack):
    addresses = await stack(IDENTITY_SPEC)
    await run_cli("apps", "create", "--id", "shop", "--name", "Shop", addresses=addresses)

    missing = await run_cli("apps", "get", "nope", addresses=addresses)
    taken = await run_cli("apps", "create", "--id", "shop", "--name", "Again", addresses=addresses)
    invalid = await run_cli(
        "apps",
        "create",
        "--id",
        "Bad Id!",
        "--name",
        "x",
        "--time-zone",
        "Mars/Olympus",
        addresses=addresses,
    )
    invalid_json = await run_cli(
        "apps", "create", "--id", "Bad Id!", "--name", "x", "--json", addresses=addresses
    )

    assert missing.code == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("error: NOT_FOUND (APP_NOT_FOUND): ")
    assert taken.code == 1
    assert taken.stderr.startswith("error: ALREADY_EXISTS (APP_ALREADY_EXISTS): ")
    assert invalid.code == 1
    lines = invalid.stderr.strip().splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT (INVALID_ARGUMENT): ")
    fields = sorted(line.strip().split(":")[0] for line in lines[1:])
    assert fields == ["app.default_time_zone", "app_id"]
    error = invalid_json.error()
    assert (error["code"], error["reason"], error["exit_code"]) == (
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        1,
    )
    assert [v["field"] for v in error["field_violations"]] == ["app_id"]
    assert error["field_violations"][0]["description"]


async def test_delete_refuses_an_app_with_devices_unless_forced(stack):
    # Delivery too: DeleteApp removes the app's credentials there.
    addresses = await stack(IDENTITY_SPEC, REGISTRATION_SPEC, DELIVERY_SPEC)
    for app in ("shop", "news"):
        await create_app(addresses, app)
    registered = await run_cli(
        "devices", "register", "shop", "phone-1", "--platform", "ios", "--os-version", "17.4",
        "--environment", "development", "--apns-token", new_device_token(),
        addresses=addresses,
    )  # fmt: skip
    assert registered.code == 0, registered.stderr

    refused = await run_cli("apps", "delete", "shop", addresses=addresses)
    still = await run_cli("devices", "get", "shop", "phone-1", addresses=addresses)
    assert refused.code == 1
    assert refused.stderr.startswith("error: FAILED_PRECONDITION (APP_HAS_DEVICES): ")
    assert still.code == 0, still.stderr  # nothing was deleted

    forced = await run_cli("apps", "delete", "shop", "--force", addresses=addresses)
    empty = await run_cli("apps", "delete", "news", "--json", addresses=addresses)
    gone, device_gone, missing = (
        await run_cli("apps", "get", "shop", addresses=addresses),
        await run_cli("devices", "get", "shop", "phone-1", addresses=addresses),
        await run_cli("apps", "delete", "nope", addresses=addresses),
    )
    assert forced.code == 0, forced.stderr
    assert forced.stdout.startswith("app shop deleted at ")
    assert empty.code == 0, empty.stderr
    assert empty.json()["delete_time"]
    assert gone.code == 1
    assert gone.stderr.startswith("error: NOT_FOUND (APP_NOT_FOUND)")
    assert device_gone.code == 1  # --force purged the app's devices
    assert missing.code == 1
    assert missing.stderr.startswith("error: NOT_FOUND (APP_NOT_FOUND)")
