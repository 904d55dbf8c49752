"""The queue under faults: GOAWAY mid-burst, a worker killed mid-batch, credentials
replaced while items are queued, two processes sharing the work."""

from __future__ import annotations

import asyncio
from collections import Counter

from services.sandbox.apns import new_device_token
from services.sandbox.pki import new_apns_key

from .conftest import apns_credentials, apns_notification
from .queue_helpers import DS, OUT, enqueue_request, wait_final, wait_for


async def test_goaway_mid_burst_loses_nothing_and_duplicates_nothing(start_node, sandbox):
    node = await start_node()
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    warm = await node.stub.Enqueue(enqueue_request([apns_notification(new_device_token())]))
    await wait_final(node.stub, [warm.results[0].notification_id])  # streams raised
    sandbox.faults.add(service="apns", action="goaway", nth=40, reason="Shutdown", delay=0.02)
    tokens = [new_device_token() for _ in range(150)]

    answer = await node.stub.Enqueue(enqueue_request([apns_notification(t) for t in tokens]))
    done = await wait_final(node.stub, [r.notification_id for r in answer.results])

    assert Counter(n.outcome for n in done) == {OUT.DELIVERY_OUTCOME_DELIVERED: 150}
    accepted = Counter(e["token"] for e in sandbox.received("apns", status=200))
    assert [t for t in tokens if accepted[t] != 1] == []
    assert sandbox.counters("apns").get("injected goaway") == 1


class _Blackhole:
    """A TCP endpoint that accepts and never answers: sends to it hang in the TLS
    handshake, so the provider never sees them."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.append(writer)
            await reader.read()

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self.writers:  # ends the handlers before the server goes
            writer.close()
        await asyncio.sleep(0.05)
        if self.server is not None:
            self.server.close()


async def test_a_worker_killed_mid_batch_is_finished_by_another_without_duplicates(
    start_node, start_service, delivery_settings, sandbox
):
    from services.delivery.spec import spec_with

    from .queue_helpers import Node, quick_options

    hole = _Blackhole()
    port = await hole.start()
    stuck_settings = delivery_settings.model_copy(
        update={"apns_development_origin": f"https://127.0.0.1:{port}"}
    )
    stuck = Node(await start_service(spec_with(quick_options()), stuck_settings))
    try:
        await stuck.stub.PutCredentials(
            DS.PutCredentialsRequest(credentials=apns_credentials(sandbox))
        )
        tokens = [new_device_token() for _ in range(40)]
        answer = await stuck.stub.Enqueue(enqueue_request([apns_notification(t) for t in tokens]))
        ids = [r.notification_id for r in answer.results]
        workers = stuck.servicer.workers

        async def all_taken() -> bool:
            return len(workers._inflight) == 40

        await wait_for(all_taken)
        workers.crash()  # killed: nothing acknowledged, nothing handed back
        await stuck.server.stop(grace=0)
        rescuer = await start_node()
        done = await wait_final(rescuer.stub, ids)
    finally:
        await stuck.close()
        await hole.close()

    assert Counter(n.outcome for n in done) == {OUT.DELIVERY_OUTCOME_DELIVERED: 40}
    accepted = Counter(e["token"] for e in sandbox.received("apns"))
    assert [t for t in tokens if accepted[t] != 1] == []
    rescuer_id = rescuer.servicer.workers.worker_id
    assert {n.attempts[-1].worker_id for n in done} == {rescuer_id}
    # A cancelled send can still come back as a result (asyncio.wait_for in 3.11 may
    # swallow a cancel that races the pool's shutdown wake-up): such attempts are
    # recorded as unsent (no provider status), never as deliveries.
    stray = [a for n in done for a in n.attempts if a.worker_id != rescuer_id]
    assert {a.provider_status for a in stray} <= {0}


async def test_two_processes_share_the_work_and_send_nothing_twice(start_node, sandbox):
    one, two = await start_node(), await start_node()
    await one.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    tokens = [new_device_token() for _ in range(300)]

    answers = await asyncio.gather(
        *(
            node.stub.Enqueue(enqueue_request([apns_notification(t) for t in tokens[i::2]]))
            for i, node in enumerate((one, two))
        )
    )
    ids = [r.notification_id for a in answers for r in a.results]
    done = await wait_final(one.stub, ids)

    assert Counter(n.outcome for n in done) == {OUT.DELIVERY_OUTCOME_DELIVERED: 300}
    accepted = Counter(e["token"] for e in sandbox.received("apns"))
    assert [t for t in tokens if accepted[t] != 1] == []
    assert one.servicer.workers.sent > 0
    assert two.servicer.workers.sent > 0


async def test_credentials_replaced_while_items_are_queued(start_node, sandbox):
    node = await start_node(worker_concurrency=8, read_batch=8)
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=apns_credentials(sandbox)))
    key_id, p8 = new_apns_key()
    sandbox.apns.register_key(key_id, sandbox.credentials.apns_team_id, p8)
    tokens = [new_device_token() for _ in range(200)]

    answer = await node.stub.Enqueue(enqueue_request([apns_notification(t) for t in tokens]))

    async def some_sent() -> bool:
        return len(sandbox.received("apns")) >= 20

    await wait_for(some_sent)
    replacement = apns_credentials(sandbox, private_key_pem=p8.decode(), key_id=key_id)
    await node.stub.PutCredentials(DS.PutCredentialsRequest(credentials=replacement))
    done = await wait_final(node.stub, [r.notification_id for r in answer.results])

    assert Counter(n.outcome for n in done) == {OUT.DELIVERY_OUTCOME_DELIVERED: 200}
    got = sandbox.received("apns", status=200)
    assert Counter(e["token"] for e in got) == Counter(tokens)
    keys = [e["key_id"] for e in got]
    assert keys[-1] == key_id  # the rest went out with the new key
    assert keys[0] != key_id
    assert "429 TooManyProviderTokenUpdates" not in sandbox.counters("apns")
