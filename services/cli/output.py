"""Where results and errors go: rich tables for people, JSON for scripts (`--json`).

Results go to stdout, errors and notes to stderr, so `herald ... --json | jq` only
ever sees results. Nothing here prints an API key; secrets reach the screen only
through `secret()`, which says loudly that they are shown once.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from services.cli import formatting
from services.cli.errors import CliError, ServerError


def _console(stream: Any) -> Console:
    # Off a terminal rich would wrap at 80 columns and fold ids and tokens in half;
    # piped output keeps whole lines instead (COLUMNS still wins when set).
    interactive = stream.isatty()
    width = None if interactive or os.environ.get("COLUMNS") else 200
    return Console(file=stream, width=width, highlight=False, soft_wrap=not interactive)


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.out = _console(sys.stdout)
        self.err = _console(sys.stderr)

    # -- scripts ----------------------------------------------------------------------
    def json(self, data: Any, *, compact: bool = False) -> None:
        text = json.dumps(data, ensure_ascii=False, indent=None if compact else 2)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    # -- people -----------------------------------------------------------------------
    def fields(self, message: Message, title: str = "") -> None:
        """A resource as a two-column table of its set fields."""
        table = Table(title=title or None, show_header=False, title_justify="left", box=None)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for name, value in formatting.rows(message):
            table.add_row(name, value)
        self.out.print(table)

    def table(
        self,
        columns: Sequence[str],
        data: Sequence[Sequence[str]],
        title: str = "",
        whole: Sequence[str] = (),
    ) -> None:
        """Columns named in `whole` hold ids people copy: never wrapped."""
        table = Table(title=title or None, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold", no_wrap=column in whole)
        for row in data:
            table.add_row(*row)
        self.out.print(table)

    def line(self, text: RenderableType = "") -> None:
        self.out.print(text)

    def note(self, text: str) -> None:
        """Context for a person (next page, hints); never in the way of a script."""
        if not self.json_mode:
            self.err.print(Text(text, style="dim"))

    def secret(self, label: str, value: str) -> None:
        """A secret the server returns exactly once (client secret, API key)."""
        self.out.print(Text(f"{label} (shown once, store it now; it cannot be read again):"))
        self.out.print(Text(f"  {value}", style="bold yellow"))

    # -- errors -----------------------------------------------------------------------
    def error(self, error: CliError) -> None:
        if self.json_mode:
            sys.stderr.write(json.dumps({"error": error_json(error)}, ensure_ascii=False) + "\n")
        else:
            self.err.print(Text(error_text(error)))
        sys.stderr.flush()


def _code(error: ServerError) -> str:
    return error.details.code.name


def error_json(error: CliError) -> dict[str, Any]:
    if not isinstance(error, ServerError):
        kind = "USAGE" if error.exit_code == 2 else "FAILED"
        return {"code": kind, "message": str(error), "exit_code": error.exit_code}
    details = error.details
    data: dict[str, Any] = {
        "code": _code(error),
        "reason": details.reason,
        "message": details.message,
        "service": error.service,
        "address": error.address,
        "method": error.method,
        "metadata": details.metadata,
        "field_violations": [{"field": f, "description": d} for f, d in details.violations],
        "exit_code": error.exit_code,
    }
    if details.retry_after_seconds is not None:
        data["retry_after_seconds"] = details.retry_after_seconds
    return data


def error_text(error: CliError) -> str:
    """`error: CODE (REASON): message`, then one indented line per field violation,
    retry hint and metadata entry: everything the server said, nothing hidden."""
    if not isinstance(error, ServerError):
        return f"error: {error}"
    details = error.details
    if error.unreachable:
        return _unreachable_text(error)
    if details.code == grpc.StatusCode.UNIMPLEMENTED:
        return _unimplemented_text(error)
    head = f"error: {_code(error)}"
    if details.reason:
        head += f" ({details.reason})"
    lines = [f"{head}: {details.message}" if details.message else head]
    lines += [f"  {field}: {description}" for field, description in details.violations]
    if details.retry_after_seconds is not None:
        lines.append(f"  retry after {details.retry_after_seconds:g} s")
    lines += [f"  {key}: {value}" for key, value in sorted(details.metadata.items())]
    return "\n".join(lines)


# What gRPC's message says when the TLS handshake, not the network, failed.
_TLS_FAILURE_MARKERS = ("handshake", "ssl_error", "certificate", "tsi_", "verification")


def _unreachable_text(error: ServerError) -> str:
    """No answer: say whether TLS is the likely cause (a handshake failed, or a plain
    channel met a TLS listener) and which option fixes it."""
    message = error.details.message or "no answer"
    where = f"the {error.service} service at {error.address}"
    if error.tls and any(marker in message.lower() for marker in _TLS_FAILURE_MARKERS):
        return (
            f"error: {_code(error)}: cannot reach {where}: the TLS handshake failed "
            f"({message}).\n"
            "  Check --tls-ca (the CA that signed the service's certificate), "
            "--tls-server-name (a name in it) and, for mTLS, --tls-cert/--tls-key; "
            "or the service does not use TLS (drop --tls-ca / HERALD_TLS_CA_FILE)."
        )
    hint = (
        "  The channel uses TLS: a service that wants a client certificate (mTLS) closes "
        "the connection without one (--tls-cert/--tls-key); a service without TLS cannot "
        "answer it (drop --tls-ca / HERALD_TLS_CA_FILE)."
        if error.tls
        else "  If the service uses TLS, pass --tls-ca (HERALD_TLS_CA_FILE)."
    )
    return (
        f"error: {_code(error)}: cannot reach {where} ({message}).\n"
        f"  Is the stack running (`make run`)? Or point --{error.service} at it.\n{hint}"
    )


def _unimplemented_text(error: ServerError) -> str:
    details = error.details
    rpc = details.metadata.get("rpc") or error.method
    issue = details.metadata.get("issue")
    where = f"the {error.service} service at {error.address}"
    text = f"error: UNIMPLEMENTED: {rpc} is not implemented yet by {where}"
    if issue:
        text += f" (issue {issue})"
    if details.message:
        text += f"\n  {details.message}"
    return text
