"""Explicit user lists inside nested filters: each list node answers for its own users,
however often the compiled audience is asked (an earlier version cached each node's set
by the id() of short-lived protobuf wrappers, which Python reuses, and so answered for
the wrong list now and then)."""

from __future__ import annotations

from herald.campaign.v1 import audience_pb2
from herald.registration.v1 import device_pb2
from herald.type.v1 import platform_pb2
from services.campaign import audience as audiences

FOREGROUND = platform_pb2.PUSH_CAPABILITY_FOREGROUND


def _users(*ids: str) -> audience_pb2.AudienceFilter:
    return audience_pb2.AudienceFilter(user_ids=audience_pb2.StringList(values=list(ids)))


def _twice_negated(inner: audience_pb2.AudienceFilter) -> audience_pb2.AudienceFilter:
    return audience_pb2.AudienceFilter(negate=audience_pb2.AudienceFilter(negate=inner))


def test_each_nested_user_list_answers_for_its_own_users_on_every_evaluation():
    lists = [[f"u{n}-{k}" for k in range(3)] for n in range(6)]
    chosen = {0, 2, 5}  # only these lists are part of the audience
    audience = audience_pb2.Audience(
        filter=audience_pb2.AudienceFilter(
            any_of=audience_pb2.AudienceFilterList(
                filters=[_twice_negated(_users(*lists[n])) for n in sorted(chosen)]
            )
        )
    )
    compiled = audiences.CompiledAudience(audience, background=False)
    wrong = []
    for round_ in range(400):
        for n, ids in enumerate(lists):
            user = ids[round_ % 3]
            device = device_pb2.AudienceDevice(
                app_id="shop", device_id=f"d-{user}", user_id=user, capability=FOREGROUND
            )
            got = compiled.matches(audiences.Recipient(device, {"external_id": user}))
            if got != (n in chosen):
                wrong.append((round_, user, got))
    assert wrong == []
