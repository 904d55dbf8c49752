"""What every command handler gets: the client and the output (the helpers the
command modules share are in commands.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from services.cli.client import Client
from services.cli.output import Output


@dataclass
class Context:
    client: Client
    out: Output


Handler = Callable[[argparse.Namespace, Context], int]
