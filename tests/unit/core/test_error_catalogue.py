"""Every ErrorInfo reason the services raise is in the catalogue of docs/api.md.

Reasons are part of the API: a caller switches on them, so a reason that appears in
code but not in the catalogue is an undocumented API change.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ERROR_CLASSES = {
    "HeraldError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "Aborted",
    "Unauthenticated",
    "PermissionDenied",
    "ResourceExhausted",
    "Unavailable",
    "Unimplemented",
}


def _raised_reasons() -> dict[str, str]:
    """reason → first file raising it, from calls to the domain error classes."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        if "sandbox" in path.parts:  # the sandboxes speak the providers' errors, not Herald's
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name not in ERROR_CLASSES:
                continue
            candidates = [kw.value for kw in node.keywords if kw.arg == "reason"]
            if name != "InvalidArgument" and node.args:
                candidates.append(node.args[0])
            for value in candidates:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.setdefault(value.value, str(path.relative_to(ROOT)))
    return found


def _catalogue() -> set[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, flags=re.MULTILINE))


def test_the_scan_finds_the_reasons_the_services_raise():
    reasons = _raised_reasons()
    assert "NOT_IMPLEMENTED_YET" in reasons
    assert len(reasons) > 10


def test_every_raised_reason_is_documented():
    undocumented = {r: f for r, f in _raised_reasons().items() if r not in _catalogue()}
    assert undocumented == {}
