"""Field-mask semantics of UpsertUser / UpdateUser, without Redis."""

from __future__ import annotations

from services.identity.user_model import User
from services.identity.user_patches import UserInput, apply_patch, build_patch

CURRENT = User(
    external_id="kim",
    email="kim@example.com",
    locale="fr-FR",
    attributes={"plan": "gold", "city": "Lyon"},
    create_us=1,
    update_us=1,
    version=3,
)


def _apply(given: UserInput, mask=(), merge=False) -> User:
    return apply_patch(CURRENT, "kim", build_patch(given, list(mask), merge), now_us=9)


def test_an_empty_mask_writes_only_what_is_set():
    after = _apply(UserInput("kim", time_zone="Europe/Paris"))
    assert (after.email, after.locale, after.time_zone) == (
        "kim@example.com",
        "fr-FR",
        "Europe/Paris",
    )
    assert after.attributes == CURRENT.attributes
    assert (after.create_us, after.update_us, after.version) == (1, 9, 3)


def test_a_masked_empty_field_clears_it():
    after = _apply(UserInput("kim"), mask=["email"])
    assert after.email == ""
    assert after.locale == "fr-FR"


def test_attributes_replace_merge_and_single_keys():
    assert _apply(UserInput("kim", attributes={"a": 1})).attributes == {"a": 1}
    merged = _apply(UserInput("kim", attributes={"city": None, "a": 1}), merge=True)
    assert merged.attributes == {"plan": "gold", "a": 1}
    single = _apply(
        UserInput("kim", attributes={"plan": "silver", "city": "x"}),
        mask=["attributes.plan", "attributes.city2"],
    )
    assert single.attributes == {"plan": "silver", "city": "Lyon"}
    removed = _apply(UserInput("kim", attributes={}), mask=["attributes.city"])
    assert removed.attributes == {"plan": "gold"}


def test_a_new_user_starts_from_its_external_id():
    created = apply_patch(
        None, "ana", build_patch(UserInput("ana", locale="en"), [], False), now_us=5
    )
    assert (created.external_id, created.locale, created.create_us, created.version) == (
        "ana",
        "en",
        5,
        0,
    )
