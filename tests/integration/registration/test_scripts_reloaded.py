"""Redis losing its Lua scripts (a restart, SCRIPT FLUSH) costs a reload, never a write."""

from __future__ import annotations

from herald.registration.v1 import registration_service_pb2 as pb
from herald.type.v1 import platform_pb2
from tests.integration.registration.conftest import Stack, apns_token, ios
from tests.integration.registration.test_audience_and_import import import_all, imported

AUTHORIZED = platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED


async def test_imports_and_registrations_after_redis_lost_its_scripts_write_everything(
    stack: Stack,
):
    first = await import_all(stack, [[imported(i) for i in range(40)]])
    assert first.created_count == 40

    await stack.redis.script_flush()
    again = await import_all(stack, [[imported(i) for i in range(40, 80)]])
    assert (again.created_count, again.failed_count) == (40, 0)
    count = await stack.registration.CountAudience(
        pb.CountAudienceRequest(query=pb.AudienceQuery(app_ids=["shop"]), exact=True)
    )
    assert count.device_count == 80

    await stack.redis.script_flush()
    registered = await stack.registration.RegisterDevice(
        ios("after-flush", apns_token(), authorization_status=AUTHORIZED)
    )
    assert registered.created
    assert registered.token_update == pb.TOKEN_UPDATE_NEW
