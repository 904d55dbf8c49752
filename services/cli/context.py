"""What every command handler gets: the client, the output, and the paging helpers."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.cli.client import Client
from services.cli.output import Output


@dataclass
class Context:
    client: Client
    out: Output


Handler = Callable[[argparse.Namespace, Context], int]


def add_paging(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("paging")
    group.add_argument("--page-size", type=int, default=0, help="items per page (server default)")
    group.add_argument("--page-token", default="", help="continue from a previous page")
    group.add_argument("--all", action="store_true", help="follow every page to the end")


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


def next_page_note(ctx: Context, token: str) -> None:
    if token:
        ctx.out.note(f"more results: add --page-token {token} (or --all)")
