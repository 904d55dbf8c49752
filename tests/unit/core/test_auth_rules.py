"""Which caller may call which RPC."""

from __future__ import annotations

import pytest

from herald.delivery.v1 import delivery_service_pb2, notification_pb2
from herald.identity.v1 import identity_service_pb2 as IS
from herald.registration.v1 import registration_service_pb2 as RS
from services.core.auth import (
    DIRECTORY_RPCS,
    Caller,
    Need,
    admin_key_required,
    app_ids_in,
    hold_app_lists,
    need_of,
)
from services.core.errors import PermissionDenied

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


IDENTITY = "/herald.identity.v1.IdentityService/"

# Users are one directory shared by the apps: an app's key reads and writes one user by
# id; what spans the directory or other apps' devices is the operator's.
USER_RPCS = {
    "UpsertUser": Need.FULL,
    "GetUser": Need.FULL,
    "LookupUser": Need.FULL,
    "UpdateUser": Need.FULL,
    "BatchGetUsers": Need.FULL,
    "GetSubscriptionState": Need.FULL,  # answered with the key's own app's devices
    "ChangeUser": Need.REGISTER,
    "DeleteUser": Need.ADMIN,  # unbinds the user's devices in every app
    "ListUsers": Need.ADMIN,
    "ExportUsers": Need.ADMIN,
}


def test_every_user_rpc_has_a_decided_need():
    service = IS.DESCRIPTOR.services_by_name["IdentityService"]
    user_rpcs = {m.name for m in service.methods if "User" in m.name or "Subscription" in m.name}
    assert user_rpcs == set(USER_RPCS), "a new user RPC: decide who may call it"
    for rpc, need in USER_RPCS.items():
        assert need_of(IDENTITY + rpc) is need, rpc
    assert {rpc for rpc, need in USER_RPCS.items() if need is Need.ADMIN} == DIRECTORY_RPCS


def test_an_app_key_is_told_why_a_directory_rpc_is_the_operators():
    refused = admin_key_required("DeleteUser")
    assert refused.reason == "ADMIN_KEY_REQUIRED"
    assert refused.metadata == {"rpc": "DeleteUser"}
    assert "user directory" in refused.message
    assert "manages apps" in admin_key_required("CreateApp").message


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


def test_app_lists_name_only_the_keys_app_and_every_app_becomes_it():
    unset = RS.StreamAudienceRequest()  # no query at all: every app
    hold_app_lists(unset, FULL_KEY)
    assert list(unset.query.app_ids) == ["shop"]

    filtered = RS.CountAudienceRequest(query=RS.AudienceQuery(platforms=[1]))
    hold_app_lists(filtered, REGISTER_KEY)
    assert list(filtered.query.app_ids) == ["shop"]
    assert list(filtered.query.platforms) == [1]  # the rest of the query is kept

    export = IS.ExportUsersRequest()  # a list at the top level
    hold_app_lists(export, FULL_KEY)
    assert list(export.app_ids) == ["shop"]
    # The selector is a oneof of messages without app lists: no choice is made for it.
    assert export.selector.WhichOneof("kind") is None

    own = RS.StreamAudienceRequest(query=RS.AudienceQuery(app_ids=["shop"]))
    hold_app_lists(own, FULL_KEY)
    assert list(own.query.app_ids) == ["shop"]
    with pytest.raises(PermissionDenied) as refused:
        hold_app_lists(RS.StreamAudienceRequest(query=RS.AudienceQuery(app_ids=["news"])), FULL_KEY)
    assert refused.value.reason == "APP_ACCESS_DENIED"
