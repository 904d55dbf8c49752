"""`herald devices` and `herald users` against Registration and Identity."""

from __future__ import annotations

import asyncio
import json

from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token

from .conftest import create_app, run_cli


async def test_devices_register_get_list_changes_and_token_errors(stack):
    addresses = await stack(REGISTRATION_SPEC, IDENTITY_SPEC)
    secret = await create_app(addresses)
    token = new_device_token()
    ios = ["--platform", "ios", "--os-version", "17.4", "--environment", "development"]

    registered = await run_cli(
        "devices",
        "register",
        "shop",
        "phone-1",
        *ios,
        "--apns-token",
        token,
        "--authorization",
        "authorized",
        addresses=addresses,
    )
    bound_without_secret = await run_cli(
        "devices", "register", "shop", "phone-1", *ios, "--user-id", "kim", addresses=addresses
    )
    bound = await run_cli(
        "devices",
        "register",
        "shop",
        "phone-1",
        *ios,
        "--user-id",
        "kim",
        "--client-secret",
        secret,
        "--json",
        addresses=addresses,
    )
    malformed, malformed_json = await asyncio.gather(
        *(
            run_cli(
                "devices",
                "register",
                "shop",
                "phone-2",
                *ios,
                "--apns-token",
                "xyz",
                *flags,
                addresses=addresses,
            )
            for flags in ([], ["--json"])
        )
    )
    shown, full, listed, device_log, user_log = await asyncio.gather(
        run_cli("devices", "get", "shop", "phone-1", addresses=addresses),
        run_cli(
            "devices", "get", "shop", "phone-1", "--show-tokens", "--json", addresses=addresses
        ),
        run_cli("devices", "list", "shop", "--json", addresses=addresses),
        run_cli("devices", "changes", "shop", "phone-1", addresses=addresses),
        run_cli("devices", "changes", "--user-id", "kim", "--json", addresses=addresses),
    )

    assert registered.code == 0, registered.stderr
    assert "Device created (token NEW)" in registered.stdout
    assert token not in registered.stdout  # redacted unless asked for
    assert bound_without_secret.code == 1
    assert bound_without_secret.stderr.startswith(
        "error: UNAUTHENTICATED (CLIENT_SECRET_REQUIRED): "
    )
    assert bound.code == 0, bound.stderr
    assert bound.json()["device"]["user_id"] == "kim"
    assert secret not in bound.stdout + bound.stderr
    # A malformed token: the reason and each violated field, plainly.
    assert malformed.code == 1
    lines = malformed.stderr.strip().splitlines()
    assert lines[0].startswith("error: INVALID_ARGUMENT (TOKEN_MALFORMED): ")
    assert any(line.startswith("  token.apns.device_token: ") for line in lines[1:])
    error = malformed_json.error()
    assert (error["code"], error["reason"], error["service"]) == (
        "INVALID_ARGUMENT",
        "TOKEN_MALFORMED",
        "registration",
    )
    assert "token.apns.device_token" in [v["field"] for v in error["field_violations"]]
    assert malformed_json.stdout == ""

    assert shown.code == 0
    assert "FOREGROUND" in shown.stdout
    assert "kim" in shown.stdout
    assert token not in shown.stdout
    assert full.json()["token"]["apns"]["device_token"] == token
    assert [d["device_id"] for d in listed.json()["devices"]] == ["phone-1"]
    assert "REGISTERED" in device_log.stdout
    assert "BOUND" in device_log.stdout
    kinds = [c["kind"] for c in user_log.json()["token_changes"]]
    assert "TOKEN_CHANGE_KIND_BOUND" in kinds


async def test_users_upsert_get_lookup_state_and_export(stack):
    addresses = await stack(REGISTRATION_SPEC, IDENTITY_SPEC)
    secret = await create_app(addresses)
    await run_cli(
        "devices",
        "register",
        "shop",
        "phone-1",
        "--platform",
        "android",
        "--os-version",
        "12",
        "--fcm-token",
        "fcm-token-123:APA91b",
        "--user-id",
        "kim",
        "--client-secret",
        secret,
        addresses=addresses,
    )

    created = await run_cli(
        "users",
        "upsert",
        "kim",
        "--email",
        "Kim@Example.COM",
        "--attr",
        'plan="gold"',
        "--attr",
        "age=41",
        addresses=addresses,
    )
    merged = await run_cli(
        "users", "upsert", "kim", "--attr", "city=Lyon", "--merge", "--json", addresses=addresses
    )
    await run_cli("users", "upsert", "lee", "--phone", "+33 6 12 34 56 78", addresses=addresses)
    got, looked_up, state, state_json, exported, partial, missing = await asyncio.gather(
        run_cli("users", "get", "kim", "--json", addresses=addresses),
        run_cli("users", "lookup", "--email", "kim@example.com", addresses=addresses),
        run_cli("users", "state", "kim", addresses=addresses),
        run_cli("users", "state", "--email", "kim@example.com", "--json", addresses=addresses),
        run_cli("users", "export", "--all", "--batch-size", "1", addresses=addresses),
        run_cli(
            "users", "export", "--id", "kim", "--email", "nobody@example.com", addresses=addresses
        ),
        run_cli("users", "get", "nobody", addresses=addresses),
    )

    assert created.code == 0, created.stderr
    assert "User created" in created.stdout
    assert merged.json()["user"]["attributes"] == {"plan": "gold", "age": 41, "city": "Lyon"}
    assert merged.json()["created"] is False
    assert got.json()["email"] == "kim@example.com"
    assert looked_up.code == 0
    assert "kim" in looked_up.stdout
    assert "Foreground: Shop" in state.stdout
    assert "push enabled for any app: yes" in state.stdout
    assert state_json.json()["push_enabled_any_app"] is True
    assert "fcm-token-123:APA91b" not in state.stdout + state_json.stdout
    # JSON lines, one user per line, tokens redacted.
    assert exported.code == 0, exported.stderr
    users = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sorted(u["user"]["external_id"] for u in users) == ["kim", "lee"]
    kim = next(u for u in users if u["user"]["external_id"] == "kim")
    assert [t["device_id"] for t in kim["push_tokens"]] == ["phone-1"]
    assert "fcm-token-123:APA91b" not in exported.stdout
    assert [json.loads(x)["user"]["external_id"] for x in partial.stdout.splitlines()] == ["kim"]
    assert "not found: email nobody@example.com" in partial.stderr
    assert missing.code == 1
    assert missing.stderr.startswith("error: NOT_FOUND (USER_NOT_FOUND): ")
