"""Command line: run the sandboxes, and script them through the control API.

    python -m services.sandbox serve [--state-dir .run/sandbox] [--apns-port 2197] ...
    python -m services.sandbox fault add --service apns --token <t> --status 410 --reason Unregistered
    python -m services.sandbox fault add --service fcm --nth 3 --action goaway
    python -m services.sandbox fault list | clear | remove <id>
    python -m services.sandbox received apns [--token <t>] [--status 410] [--limit 20]
    python -m services.sandbox counters [apns|fcm|webpush]
    python -m services.sandbox apns-token <token> --state unregistered
    python -m services.sandbox apns-certificate <bundle id> [--environment development]
    python -m services.sandbox fcm-token <token> --state unregistered
    python -m services.sandbox subscribe [--application-server-key <key>]
    python -m services.sandbox subscription <id> --state unsubscribed
    python -m services.sandbox limits [apns|fcm|webpush ...]   # e.g. limits fcm --device-per-minute 240
    python -m services.sandbox info | reset

Every command but `serve` prints the control API's JSON answer and exits 0, or prints the
error and exits 1 (2 when the control API cannot be reached).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from .faults import ACTIONS
from .stack import DEFAULT_HOST, DEFAULT_STATE_DIR, SandboxPorts, SandboxStack

DEFAULT_CONTROL_URL = "http://127.0.0.1:8440"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _call_control(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.sandbox",
        description="Herald's APNs, FCM and Web Push sandboxes.",
    )
    parser.add_argument(
        "--control",
        default=os.environ.get("HERALD_SANDBOX_CONTROL_URL", DEFAULT_CONTROL_URL),
        help="control API of a running sandbox (env HERALD_SANDBOX_CONTROL_URL)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ports = SandboxPorts.from_env()
    serve = commands.add_parser("serve", help="run the three sandboxes and the control API")
    serve.add_argument(
        "--state-dir",
        default=os.environ.get("HERALD_SANDBOX_STATE_DIR", str(DEFAULT_STATE_DIR)),
        help="where the CA and demo credentials are kept (env HERALD_SANDBOX_STATE_DIR)",
    )
    serve.add_argument("--host", default=os.environ.get("HERALD_SANDBOX_HOST", DEFAULT_HOST))
    serve.add_argument("--apns-port", type=int, default=ports.apns)
    serve.add_argument("--fcm-port", type=int, default=ports.fcm)
    serve.add_argument("--webpush-port", type=int, default=ports.webpush)
    serve.add_argument("--control-port", type=int, default=ports.control)
    serve.add_argument(
        "--apns-environment",
        choices=("development", "production"),
        default=os.environ.get("HERALD_SANDBOX_APNS_ENVIRONMENT", "development"),
        help="environment of requests whose host names neither APNs host",
    )

    fault = commands.add_parser("fault", help="failure injection rules")
    fault_commands = fault.add_subparsers(dest="fault_command", required=True)
    add = fault_commands.add_parser("add", help="add a rule")
    add.add_argument("--service", choices=("apns", "fcm", "webpush", "any"), required=True)
    add.add_argument("--token", help="only requests for this token / subscription id")
    add.add_argument("--nth", type=int, help="fire on the n-th matching request (from 1)")
    add.add_argument("--times", type=int, help="how many times (default: 1 with --nth, else all)")
    add.add_argument("--action", choices=ACTIONS, help="default: status if --status, else pass")
    add.add_argument("--status", type=int)
    add.add_argument("--reason", help="APNs reason / FCM errorCode / GOAWAY debug reason")
    add.add_argument("--retry-after", type=int)
    add.add_argument("--delay", type=float, help="seconds before the answer (slow answers)")
    add.add_argument("--last-stream-id", type=int, help="GOAWAY's last_stream_id")
    add.add_argument("--error-code", type=int, help="GOAWAY / RST_STREAM HTTP/2 error code")
    fault_commands.add_parser("list", help="list the rules")
    fault_commands.add_parser("clear", help="remove every rule")
    remove = fault_commands.add_parser("remove", help="remove one rule")
    remove.add_argument("rule_id")

    received = commands.add_parser("received", help="what a sandbox received")
    received.add_argument("service", choices=("apns", "fcm", "webpush"))
    received.add_argument("--token")
    received.add_argument("--status", type=int)
    received.add_argument("--since", type=int, help="only entries after this seq")
    received.add_argument("--limit", type=int, default=50)

    counters = commands.add_parser("counters", help="answers per outcome")
    counters.add_argument("service", nargs="?", choices=("apns", "fcm", "webpush"))

    apns_token = commands.add_parser("apns-token", help="set an APNs device token's state")
    apns_token.add_argument("token")
    apns_token.add_argument("--state", choices=("active", "unregistered", "expired"), required=True)
    apns_token.add_argument("--topic", help="the bundle id the token belongs to")
    apns_token.add_argument("--environment", choices=("development", "production"))
    apns_token.add_argument("--timestamp-ms", type=int, help="Unregistered since (ms)")

    certificate = commands.add_parser(
        "apns-certificate", help="issue an APNs provider certificate (prints key + cert PEM)"
    )
    certificate.add_argument("bundle_id")
    certificate.add_argument("--environment", choices=("development", "both"), default="both")

    fcm_token = commands.add_parser("fcm-token", help="set an FCM registration token's state")
    fcm_token.add_argument("token")
    fcm_token.add_argument(
        "--state",
        choices=(
            "active",
            "unregistered",
            "sender_id_mismatch",
            "third_party_auth_error",
            "invalid",
        ),
        required=True,
    )
    fcm_token.add_argument("--project", help="the project the token belongs to")

    subscribe = commands.add_parser("subscribe", help="create a Web Push subscription")
    subscribe.add_argument("--application-server-key", help="VAPID public key (base64url)")
    subscription = commands.add_parser("subscription", help="set a subscription's state")
    subscription.add_argument("subscription_id", help="id or endpoint URL")
    subscription.add_argument(
        "--state", choices=("active", "expired", "unsubscribed"), required=True
    )

    limits = commands.add_parser(
        "limits", help="show the rate limits, or set one service's (0 turns a limit off)"
    )
    limit_services = limits.add_subparsers(dest="limits_service")
    apns_limits = limit_services.add_parser("apns", help="per-device limit, token-update penalty")
    apns_limits.add_argument("--device-per-minute", type=int, help="429 TooManyRequests beyond")
    apns_limits.add_argument("--device-per-hour", type=int)
    apns_limits.add_argument(
        "--token-update-penalty",
        type=float,
        help="seconds a connection stays unusable after TooManyProviderTokenUpdates",
    )
    fcm_limits = limit_services.add_parser("fcm", help="per-device limit (FCM: 240/min, 5000/h)")
    fcm_limits.add_argument("--device-per-minute", type=int, help="429 QUOTA_EXCEEDED beyond")
    fcm_limits.add_argument("--device-per-hour", type=int)
    fcm_limits.add_argument("--project-per-minute", type=int, help="one project's quota")
    fcm_limits.add_argument("--project", help="the project --project-per-minute is for")
    webpush_limits = limit_services.add_parser("webpush", help="per-subscription / VAPID-key")
    webpush_limits.add_argument("--subscription-per-minute", type=int, help="429 beyond")
    webpush_limits.add_argument("--vapid-key-per-minute", type=int, help="429 beyond")

    commands.add_parser("info", help="ports, CA file and demo credentials")
    commands.add_parser("reset", help="forget states, rules, logs and counters")
    return parser


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, body) for a control command."""
    match args.command:
        case "fault":
            if args.fault_command == "add":
                rule = {
                    "service": args.service,
                    "token": args.token,
                    "nth": args.nth,
                    "times": args.times,
                    "action": args.action,
                    "status": args.status,
                    "reason": args.reason,
                    "retry_after": args.retry_after,
                    "delay": args.delay,
                    "last_stream_id": args.last_stream_id,
                    "error_code": args.error_code,
                }
                return "POST", "/faults", {k: v for k, v in rule.items() if v is not None}
            if args.fault_command == "list":
                return "GET", "/faults", None
            if args.fault_command == "clear":
                return "DELETE", "/faults", None
            return "DELETE", f"/faults/{quote(args.rule_id)}", None
        case "received":
            query = {"token": args.token, "status": args.status, "since": args.since}
            query["limit"] = args.limit
            params = urlencode({k: v for k, v in query.items() if v is not None})
            return "GET", f"/received/{args.service}?{params}", None
        case "counters":
            return "GET", f"/counters/{args.service}" if args.service else "/counters", None
        case "apns-token":
            body = {
                "state": args.state,
                "topic": args.topic,
                "environment": args.environment,
                "unregistered_at_ms": args.timestamp_ms,
            }
            return "PUT", f"/apns/tokens/{quote(args.token)}", _present(body)
        case "apns-certificate":
            body = {"bundle_id": args.bundle_id, "environment": args.environment}
            return "POST", "/apns/certificates", body
        case "fcm-token":
            body = {"state": args.state, "project": args.project}
            return "PUT", f"/fcm/tokens/{quote(args.token, safe='')}", _present(body)
        case "subscribe":
            body = {"application_server_key": args.application_server_key}
            return "POST", "/webpush/subscriptions", _present(body)
        case "subscription":
            sub_id = args.subscription_id.rsplit("/push/", 1)[-1]
            return "PUT", f"/webpush/subscriptions/{quote(sub_id)}", {"state": args.state}
        case "limits":
            return _limits_request(args)
        case "info":
            return "GET", "/info", None
        case "reset":
            return "POST", "/reset", None
    raise SystemExit(f"unknown command {args.command}")


def _limits_request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    service = args.limits_service
    if service is None:
        return "GET", "/limits", None
    if service == "apns":
        body = {
            "device_per_minute": args.device_per_minute,
            "device_per_hour": args.device_per_hour,
            "token_update_penalty": args.token_update_penalty,
        }
    elif service == "fcm":
        if args.project_per_minute is not None:
            # The project quota has its own route; --project names which one.
            if not args.project:
                raise SystemExit("--project-per-minute needs --project")
            if args.device_per_minute is not None or args.device_per_hour is not None:
                raise SystemExit("set the project quota and the device limits separately")
            return (
                "PUT",
                f"/fcm/quota/{quote(args.project)}",
                {"per_minute": args.project_per_minute},
            )
        body = {
            "device_per_minute": args.device_per_minute,
            "device_per_hour": args.device_per_hour,
        }
    else:
        body = {
            "subscription_per_minute": args.subscription_per_minute,
            "vapid_key_per_minute": args.vapid_key_per_minute,
        }
    return "PUT", f"/{service}/limits", _present(body)


def _present(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def _call_control(args: argparse.Namespace) -> int:
    method, path, body = _request(args)
    url = args.control.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        print(f"control URL must be http(s): {args.control}", file=sys.stderr)
        return 2
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            print(json.dumps(json.loads(response.read()), indent=2, ensure_ascii=False))
            return 0
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        print(f"error {error.code}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"cannot reach the sandbox control API at {args.control}: {error}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    ports = SandboxPorts(args.apns_port, args.fcm_port, args.webpush_port, args.control_port)
    try:
        import uvloop  # optional speed-up: the sandbox runs without it

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_run(args.state_dir, ports, args.host, args.apns_environment))
    return 0


async def _run(state_dir: str, ports: SandboxPorts, host: str, apns_environment: Any) -> None:
    log = logging.getLogger("services.sandbox")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SandboxStack.start(state_dir, ports, host, apns_environment) as stack:
        log.info(
            "sandboxes up: APNs https://%s:%d  FCM https://%s:%d  Web Push https://%s:%d  "
            "control http://%s:%d  CA %s",
            host,
            stack.apns_port,
            host,
            stack.fcm_port,
            host,
            stack.webpush_port,
            host,
            stack.control_port,
            stack.ca_file,
        )
        log.info("demo credentials in %s", stack.credentials.apns_key_file.parent)
        await stop.wait()
        log.info("stopping")


if __name__ == "__main__":
    sys.exit(main())
