"""UNIMPLEMENTED answers for RPCs a later issue fills in.

A servicer overrides the RPCs it implements; `fill_pending` gives every other RPC of the
service an answer that says so plainly (status UNIMPLEMENTED, reason
NOT_IMPLEMENTED_YET, the RPC and the issue that brings it), instead of the generated
"Method not implemented!" or something that pretends to work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor

from services.core.errors import Unimplemented

NOT_IMPLEMENTED_YET = "NOT_IMPLEMENTED_YET"


def _error(rpc: str, issue: str) -> Unimplemented:
    return Unimplemented(
        NOT_IMPLEMENTED_YET,
        f"{rpc} is not implemented yet: it arrives with {issue}",
        {"rpc": rpc, "issue": issue},
    )


def _pending(rpc: str, issue: str, server_streaming: bool) -> Callable[..., Any]:
    if server_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            raise _error(rpc, issue)
            yield  # pragma: no cover - makes this an async generator

        return stream

    async def unary(request: Any, context: Any) -> Any:
        raise _error(rpc, issue)

    return unary


def fill_pending(
    servicer: object, generated_base: type, service: ServiceDescriptor, issue: str
) -> list[str]:
    """Give each RPC `servicer` does not override a clear UNIMPLEMENTED; returns their names."""
    pending = []
    for method in service.methods:
        if getattr(type(servicer), method.name) is getattr(generated_base, method.name):
            rpc = f"{service.full_name}/{method.name}"
            setattr(servicer, method.name, _pending(rpc, issue, method.server_streaming))
            pending.append(method.name)
    return pending
