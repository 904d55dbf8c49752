"""Coalescer: many callers' writes to one key (a queue shard) become one call.

Workers record each answered attempt with a Redis script. One call per attempt cost a
round trip, a pooled connection and a command's packing each — a large part of a
push's CPU (docs/benchmarks/delivery.md). Here each caller adds its item and awaits;
the items added while the previous call for that key ran (or during this loop pass)
go in the next call together. Nothing waits on a timer: an idle queue's item goes out
on the next loop pass, a busy queue's items share a call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from contextvars import Context
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")


class Coalescer(Generic[Key, Item]):
    """`await add(key, item)` returns when the call that wrote `item` has finished (and
    raises what that call raised). At most one call per key runs at a time, with at
    most `max_batch` items."""

    def __init__(
        self, write: Callable[[Key, list[Item]], Awaitable[None]], max_batch: int = 256
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: dict[Key, list[tuple[Item, asyncio.Future[None]]]] = {}
        self._running: dict[Key, asyncio.Task[None]] = {}

    async def add(self, key: Key, item: Item) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((item, future))
        if key not in self._running:
            # A fresh context: the batch serves many callers, so it joins none's trace.
            self._running[key] = asyncio.create_task(self._drain(key), context=Context())
        # The write goes on if this caller is cancelled (a finished send is recorded).
        await asyncio.shield(future)

    async def _drain(self, key: Key) -> None:
        """Write the key's pending items, batch after batch, until none are left."""
        try:
            await asyncio.sleep(0)  # let this loop pass's other callers join the batch
            while self._pending.get(key):
                waiting = self._pending[key]
                batch, rest = waiting[: self._max_batch], waiting[self._max_batch :]
                if rest:
                    self._pending[key] = rest
                else:
                    del self._pending[key]
                try:
                    await self._write(key, [item for item, _ in batch])
                except BaseException as error:  # each caller sees its own call's failure
                    failure = (
                        error
                        if isinstance(error, Exception)
                        else ConnectionError("the batch write was cancelled")
                    )
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    if not isinstance(error, Exception):
                        raise  # cancelled: the finally below fails what is still pending
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._running.pop(key, None)
            if self._pending.get(key):  # cancelled with items left: fail them, not hang
                for _, future in self._pending.pop(key):
                    if not future.done():
                        future.set_exception(ConnectionError("the batch write was cancelled"))
