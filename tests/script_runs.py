"""Which of services/'s Lua scripts a test run executed (`pytest --every-script`).

Every script reaches Redis as EVALSHA of its SHA1 (redis-py's Script and
core.script_batches both send it so), through a connection's pack_command: watching
that names the scripts run, and services.core.redis.SCRIPT_FILES maps each SHA1 to the
files it was made of. A script file that none of them contains was not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection

from services.core.redis import SCRIPT_FILES

SERVICES = Path(__file__).resolve().parents[1] / "services"
_run: set[str] = set()


def _note(args: tuple[Any, ...]) -> None:
    if len(args) > 1:
        name = args[0].decode() if isinstance(args[0], bytes) else str(args[0])
        if name.upper() in ("EVALSHA", "EVALSHA_RO"):
            _run.add(args[1].decode() if isinstance(args[1], bytes) else str(args[1]))


def watch() -> None:
    """Note the SHA1 of every EVALSHA the asyncio clients send from now on: through
    redis-py's packer (Cluster connections) or hiredis's (the services' single-node
    connections, services.core.redis.packed_by_hiredis)."""
    packer = AbstractConnection.pack_command
    packed = hiredis.pack_command

    def noting(self: AbstractConnection, *args: Any) -> list[bytes]:
        _note(args)
        return packer(self, *args)

    def noting_hiredis(args: tuple[Any, ...]) -> bytes:
        _note(args)
        return packed(args)

    AbstractConnection.pack_command = noting  # type: ignore[method-assign]
    hiredis.pack_command = noting_hiredis  # type: ignore[assignment]


def never_run() -> list[str]:
    """The script files (package/name) no executed script was made of."""
    ran = {part for sha in _run for part in SCRIPT_FILES.get(sha, ())}
    every = {
        f"{path.parent.relative_to(SERVICES.parent).as_posix().replace('/', '.')}/{path.name}"
        for path in SERVICES.glob("*/scripts/*.lua")
    }
    return sorted(every - ran)
