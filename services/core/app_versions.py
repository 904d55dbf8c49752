"""App versions as audience filters compare them ("4.12.0" < "4.12.1", "5.0-beta" < "5.0").

Campaign evaluates an `app_version` condition on every device, and Registration
applies the same condition when Campaign pushes it down into an AudienceQuery: the
two must order versions alike, or the pushdown would drop devices Campaign's own
evaluation matches. So the ordering lives here, once.
"""

from __future__ import annotations

import re

_VERSION = re.compile(r"^\d+(\.\d+)*(-[0-9A-Za-z.]+)?$")


def version_key(version: str) -> tuple[tuple[int, ...], int, str] | None:
    """A sort key: numeric components (trailing zeros dropped, so "4.10" == "4.10.0"),
    then a release after its pre-releases; None for anything not a dotted version."""
    if not _VERSION.match(version):
        return None
    release, _, pre = version.partition("-")
    numbers = [int(part) for part in release.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers), 0 if pre else 1, pre
