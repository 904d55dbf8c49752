"""`herald`: parse the command line, call the services, print, exit with a meaningful code.

Global options work before or after the command (`herald --json apps get x` and
`herald apps get x --json`): each command's parser repeats them with SUPPRESS defaults,
so a value given after the command wins and an absent one keeps the global default.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from services.cli import (
    apps,
    campaigns,
    credentials,
    demo,
    devices,
    keys,
    notifications,
    send,
    tls,
    trace,
    users,
)
from services.cli.client import SERVICES, Client
from services.cli.context import Context, Handler
from services.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, UsageError
from services.cli.output import Output

GROUPS = (apps, keys, credentials, devices, users, send, campaigns, notifications, trace, demo)

DESCRIPTION = """\
Manage and debug a Herald installation: apps, their API keys and provider credentials,
devices and users, pushes, campaigns and per-notification traces.

Service addresses default to the HERALD_<SERVICE>_ADDRESS settings (the same ones the
services read; `make run` listens on 127.0.0.1:50051-50054). TLS follows the services'
HERALD_TLS_CA_FILE / _CERT_FILE / _KEY_FILE / _SERVER_NAME (or --tls-* options).
"""

EPILOG = """\
exit codes: 0 ok, 1 the server refused (or a push was not delivered),
            2 bad command line or input file, 3 a service could not be reached.

examples:
  herald apps create --id shop --name "Shop"
  herald devices register shop phone-1 --platform ios --os-version 17.4 \\
      --apns-token 3f2a... --environment development --authorization authorized
  herald send shop --device phone-1 --title Hi --body "Your order shipped"
  herald trace 6d1f0c1e-...
"""


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every command accepts; `top` is False for per-command copies."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection and output (any position)")
    for service in SERVICES:
        group.add_argument(
            f"--{service}",
            metavar="ADDRESS",
            dest=f"{service}_address",
            default=default(None),
            help=f"{service} service host:port (HERALD_{service.upper()}_ADDRESS, "
            "else the configuration file, else the default port)",
        )
    group.add_argument(
        "--api-key",
        default=default(os.environ.get("HERALD_API_KEY", "")),
        help="app API key, sent as x-api-key (HERALD_API_KEY)",
    )
    group.add_argument(
        "--admin-key",
        default=default(os.environ.get("HERALD_ADMIN_KEY", "")),
        help="operator key for app management and for users export/delete, sent as "
        "x-admin-key (HERALD_ADMIN_KEY)",
    )
    secure = parser.add_argument_group("TLS (the services' HERALD_TLS_* variables work too)")
    secure.add_argument(
        "--tls-ca",
        metavar="PEM",
        dest="ca_file",
        default=default(None),
        help="trust this CA for the services' certificates; turns TLS on (HERALD_TLS_CA_FILE)",
    )
    secure.add_argument(
        "--tls-cert",
        metavar="PEM",
        dest="cert_file",
        default=default(None),
        help="client certificate for mTLS, with --tls-key (HERALD_TLS_CERT_FILE)",
    )
    secure.add_argument(
        "--tls-key",
        metavar="PEM",
        dest="key_file",
        default=default(None),
        help="the client certificate's private key (HERALD_TLS_KEY_FILE)",
    )
    secure.add_argument(
        "--tls-server-name",
        metavar="NAME",
        dest="server_name",
        default=default(None),
        help="the name to check in the services' certificates when addresses are IPs "
        "(HERALD_TLS_SERVER_NAME)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=default(30.0),
        help="seconds to wait for each answer (default 30; streams have none)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print results (and errors, on stderr) as JSON for scripts",
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors honouring --json (scripts parse stderr too)."""

    json_errors = False

    def error(self, message: str) -> None:  # type: ignore[override]
        if self.json_errors:
            Output(json_mode=True).error(UsageError(f"{self.prog}: {message}"))
            raise SystemExit(EXIT_USAGE)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="herald",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, top=False)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(commands, common)
    return parser


def resolve_addresses(given: dict[str, str | None]) -> dict[str, str]:
    """Each service's address: the flag, else HERALD_<SERVICE>_ADDRESS, else the
    configuration (file or default) through load_settings.

    The environment wins over the file in load_settings too, so reading it first
    changes no answer; it spares the common case importing pydantic (most of a
    second of start-up on a busy machine) for every command.
    """
    addresses = {
        s: given.get(s) or os.environ.get(f"HERALD_{s.upper()}_ADDRESS", "") for s in SERVICES
    }
    if not all(addresses.values()):
        from services.core.config import ConfigError, load_settings

        try:
            settings = load_settings()
        except ConfigError as error:
            raise UsageError(str(error)) from None
        for s in SERVICES:
            addresses[s] = addresses[s] or str(getattr(settings, f"{s}_address"))
    return addresses


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in argv
    args = build_parser().parse_args(argv)
    out = Output(json_mode=args.json)
    try:
        addresses = resolve_addresses({s: getattr(args, f"{s}_address") for s in SERVICES})
        security = tls.security(
            tls.from_environment({name: getattr(args, name) for name in tls.SOURCES})
        )
    except UsageError as error:
        out.error(error)
        return EXIT_USAGE
    client = Client(
        addresses=addresses,
        api_key=args.api_key,
        admin_key=args.admin_key,
        timeout=args.timeout,
        security=security,
    )
    handler: Handler = args.handler
    try:
        return handler(args, Context(client, out))
    except CliError as error:
        out.error(error)
        return error.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `herald users export ... | head`: the reader left; that is not a failure.
        # Point stdout at devnull so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        client.close()
