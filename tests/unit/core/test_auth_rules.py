"""Which caller may call which RPC."""

from __future__ import annotations

import pytest

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from services.core.auth import Caller, Need, app_ids_in, need_of

REGISTER_KEY = Caller("app", "shop", full_scope=False)
FULL_KEY = Caller("app", "shop", full_scope=True)


@pytest.mark.parametrize(
    ("method", "need"),
    [
        ("/grpc.health.v1.Health/Check", Need.OPEN),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Need.OPEN),
        ("/herald.registration.v1.RegistrationService/RegisterDevice", Need.REGISTER),
        ("/herald.identity.v1.IdentityService/ChangeUser", Need.REGISTER),
        ("/herald.campaign.v1.CampaignService/RecordEngagement", Need.REGISTER),
        ("/herald.registration.v1.RegistrationService/ListDevices", Need.FULL),
        ("/herald.identity.v1.IdentityService/CreateApp", Need.ADMIN),
        ("/herald.registration.v1.RegistrationService/InvalidateTokens", Need.INTERNAL),
        ("/herald.identity.v1.IdentityService/VerifyClientSecret", Need.INTERNAL),
    ],
)
def test_each_rpc_needs_what_its_callers_are_meant_to_have(method, need):
    assert need_of(method) is need


def test_scopes_admin_and_internal_callers():
    assert REGISTER_KEY.may(Need.REGISTER)
    assert not REGISTER_KEY.may(Need.FULL)
    assert FULL_KEY.may(Need.FULL)
    assert FULL_KEY.may(Need.REGISTER)
    for app_key in (REGISTER_KEY, FULL_KEY):
        assert not app_key.may(Need.ADMIN)
        assert not app_key.may(Need.INTERNAL)
    assert Caller("admin").may(Need.ADMIN)
    assert not Caller("admin").may(Need.INTERNAL)
    assert Caller("internal").may(Need.INTERNAL)


def test_app_ids_are_found_at_the_top_and_in_carried_messages():
    request = delivery_service_pb2.EnqueueRequest(
        notifications=[
            notification_pb2.Notification(app_id="shop"),
            notification_pb2.Notification(app_id="news"),
        ]
    )
    assert app_ids_in(request) == {"shop", "news"}
    assert app_ids_in(delivery_service_pb2.GetCredentialsRequest(app_id="shop")) == {"shop"}
