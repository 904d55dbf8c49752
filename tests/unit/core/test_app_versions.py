"""The app-version ordering Campaign's audiences and Registration's pushdown share."""

from __future__ import annotations

import pytest

from services.core.app_versions import version_key


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("4.9", "4.10"),  # numerically, not as text
        ("4.12.0", "4.12.1"),
        ("5.0-beta", "5.0"),  # a release after its pre-releases
        ("5.0-alpha", "5.0-beta"),
        ("17", "17.0.1"),
    ],
)
def test_order(lower, higher):
    assert version_key(lower) < version_key(higher)


def test_trailing_zeros_do_not_count():
    assert version_key("4.10") == version_key("4.10.0.0")
    assert version_key("0") == version_key("0.0")


@pytest.mark.parametrize("text", ["", "v4", "4.", ".4", "4..1", "4.1-", "4.1 beta", "latest"])
def test_anything_else_is_no_version(text):
    assert version_key(text) is None
