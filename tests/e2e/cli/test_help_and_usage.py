"""`--help` everywhere, usage errors (exit 2) and an unreachable service (exit 3)."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import run_cli

COMMANDS = [
    [],
    ["apps"],
    ["credentials", "put-apns"],
    ["devices", "register"],
    ["users", "export"],
    ["send"],
    ["campaigns", "watch"],
    ["trace"],
]


async def test_help_everywhere():
    results = await asyncio.gather(*(run_cli(*command, "--help") for command in COMMANDS))

    for command, result in zip(COMMANDS, results, strict=True):
        assert result.code == 0, (command, result.stderr)
        assert result.stdout.startswith("usage: herald"), command
        assert "--json" in result.stdout, command  # the global options are everywhere
    assert "exit codes: 0 ok" in results[0].stdout
    assert "--apns-token" in results[3].stdout


async def test_usage_errors_exit_2_and_send_nothing():
    missing_name, bad_choice, two_targets, bad_json, missing_file = await asyncio.gather(
        run_cli("apps", "create"),
        run_cli("devices", "register", "shop", "d1", "--platform", "symbian"),
        run_cli("send", "shop", "--device", "d", "--user", "u", "--title", "x"),
        run_cli("users", "upsert", "kim", "--attributes", "{nope", "--json"),
        run_cli("credentials", "put-fcm", "shop", "--service-account", "/nonexistent/key.json"),
    )

    assert missing_name.code == 2
    assert "the following arguments are required: --name" in missing_name.stderr
    assert bad_choice.code == 2
    assert "invalid choice: 'symbian'" in bad_choice.stderr
    assert two_targets.code == 2
    assert two_targets.stderr.strip() == (
        "error: give exactly one target: --device, --user or a token option"
    )
    assert bad_json.code == 2
    assert bad_json.error()["code"] == "USAGE"
    assert "--attributes is not valid JSON" in bad_json.error()["message"]
    assert missing_file.code == 2
    assert "cannot read service-account file '/nonexistent/key.json'" in missing_file.stderr


@pytest.mark.parametrize("json_mode", [False, True])
async def test_an_unreachable_service_exits_3_and_says_where(json_mode):
    flags = ["--json"] if json_mode else []
    # No service is started: every address points at a closed port.
    result = await run_cli("apps", "get", "shop", "--timeout", "3", *flags)

    assert result.code == 3
    assert result.stdout == ""
    if json_mode:
        error = result.error()
        assert (error["code"], error["service"], error["exit_code"]) == (
            "UNAVAILABLE",
            "identity",
            3,
        )
    else:
        assert result.stderr.startswith("error: UNAVAILABLE: cannot reach the identity service at")
        assert "make run" in result.stderr
