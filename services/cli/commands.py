"""The plumbing every `herald` command module shares, so that each module keeps only
what is its own (its options, its request, its table's columns).

- `group()` and `command()`: a command group (`herald apps ...`) and its commands.
  Every parser takes the global options through the `common` parent (main.py) and
  gets its handler;
- `add_request_id()` / `request_id()`: the idempotency key option, a new UUID when
  absent (a retried command then creates nothing twice only when given one);
- `show()` / `json_answered()`: an answer as JSON (`--json`) or as a table of its
  resource's fields;
- `add_paging()` and `list_pages()`: a List RPC page by page (`--page-size`,
  `--page-token`, `--all`), printed as `{"<items>": [...], "next_page_token": ...}`
  or as a table followed by a note on how to get the next page.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message

from services.cli import formatting
from services.cli.context import Context, Handler


# -- parsers --------------------------------------------------------------------------------
class Group:
    """A command group's subparsers, with the parent parser of the global options."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self.sub = sub
        self.common = common

    def command(
        self, name: str, handler: Handler | None, help: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        return command(self.sub, self.common, name, handler, help, description)


def group(commands: Any, common: argparse.ArgumentParser, name: str, help: str) -> Group:
    """`herald <name> COMMAND`: a group whose commands are added with `Group.command`."""
    parser = commands.add_parser(name, parents=[common], help=help)
    sub = parser.add_subparsers(title=f"{name} commands", metavar="COMMAND", required=True)
    return Group(sub, common)


def command(
    commands: Any,
    common: argparse.ArgumentParser,
    name: str,
    handler: Handler | None,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """One command taking the global options; `handler` None: the caller sets it once
    its arguments are added (a handler built from them)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, parents=[common], help=help, description=description
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_request_id(parser: argparse._ActionsContainer) -> None:
    parser.add_argument("--request-id", default="", help="idempotency key (a new UUID)")


def request_id(args: argparse.Namespace) -> str:
    return str(args.request_id or uuid.uuid4())


# -- one answer -----------------------------------------------------------------------------
def json_answered(ctx: Context, answer: Message) -> bool:
    """With --json, prints the whole answer and says so; the caller is then done."""
    if ctx.out.json_mode:
        ctx.out.json(formatting.to_json(answer))
    return ctx.out.json_mode


def show(ctx: Context, resource: Message, title: str = "", answer: Message | None = None) -> int:
    """`resource` as a table of its fields; with --json, `answer` (the whole response,
    when it says more than the resource) or else the resource. Returns exit code 0."""
    if not json_answered(ctx, resource if answer is None else answer):
        ctx.out.fields(resource, title=title)
    return 0


# -- lists ----------------------------------------------------------------------------------
def add_paging(parser: argparse.ArgumentParser) -> None:
    paging = parser.add_argument_group("paging")
    paging.add_argument("--page-size", type=int, default=0, help="items per page (server default)")
    paging.add_argument("--page-token", default="", help="continue from a previous page")
    paging.add_argument("--all", action="store_true", help="follow every page to the end")


def collect_pages(
    args: argparse.Namespace, fetch: Callable[[str], tuple[Sequence[Any], str]]
) -> tuple[list[Any], str]:
    """One page, or with --all every page; returns the items and the next page token."""
    items: list[Any] = []
    token = args.page_token
    while True:
        batch, token = fetch(token)
        items.extend(batch)
        if not args.all or not token:
            return items, token


def list_pages(
    args: argparse.Namespace,
    ctx: Context,
    service: str,
    method: str,
    request: Any,
    items: str,
    columns: Sequence[str],
    row: Callable[[Any], list[str]],
    whole: Sequence[str] = (),
) -> int:
    """Calls `method` with `request` (a List request without its paging fields) page by
    page and prints what it lists. `items` names the response's repeated field, which
    is also the key of the --json object."""

    def fetch(token: str) -> tuple[Any, str]:
        request.page_size = args.page_size
        request.page_token = token
        answer = ctx.client.call(service, method, request)
        return getattr(answer, items), answer.next_page_token

    found, token = collect_pages(args, fetch)
    if ctx.out.json_mode:
        ctx.out.json({items: [formatting.to_json(i) for i in found], "next_page_token": token})
        return 0
    ctx.out.table(columns, [row(i) for i in found], whole=whole)
    if token:
        ctx.out.note(f"more results: add --page-token {token} (or --all)")
    return 0
