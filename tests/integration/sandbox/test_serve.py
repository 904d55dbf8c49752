"""`python -m services.sandbox serve` as a process: what it writes, and where.

It must write only into its state directory, and create the demo credentials once: a
second start reuses them byte for byte (clients configured from them keep working).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
UP = re.compile(r"sandboxes up: .* control http://127\.0\.0\.1:(\d+)")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@contextmanager
def _serve(cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """Run `serve` on ephemeral ports in `cwd`; yields its control URL."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "services.sandbox", "serve"),
            *("--apns-port", "0", "--fcm-port", "0", "--webpush-port", "0", "--control-port", "0"),
        ],
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 20
        for line in process.stderr:
            match = UP.search(line)
            if match:
                yield f"http://127.0.0.1:{match.group(1)}"
                break
            assert time.monotonic() < deadline, "serve did not come up"
        else:
            raise AssertionError("serve exited before coming up")
    finally:
        process.terminate()
        process.communicate(timeout=10)  # drains and closes the stderr pipe


def _cli(control: str, env: dict[str, str], *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "services.sandbox", "--control", control, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return json.loads(out.stdout)


def test_serve_writes_only_its_state_dir_and_creates_credentials_once(tmp_path):
    work, home, temp = tmp_path / "work", tmp_path / "home", tmp_path / "tmp"
    for directory in (work, home, temp):
        directory.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(home),
        "TMPDIR": str(temp),
    }

    with _serve(work, env) as control:
        info = _cli(control, env, "info")
    first = _files(tmp_path)
    with _serve(work, env) as control:
        again = _cli(control, env, "info")
    second = _files(tmp_path)

    # The default state dir, relative to where it runs (git-ignored .run/ in the repo)...
    state = work / ".run" / "sandbox"
    assert Path(info["ca_file"]).resolve() == (state / "ca.pem").resolve()
    # ...and nothing anywhere else: not in the working directory, $HOME or $TMPDIR.
    assert all(name.startswith("work/.run/sandbox/") for name in second), sorted(second)
    # Generated once: the second start reused every file (the FCM port, and so the
    # token_uri in the service-account JSON, may differ between starts).
    account = "work/.run/sandbox/credentials/fcm-service-account.json"
    assert sorted(first) == sorted(second)
    assert {k: v for k, v in first.items() if k != account} == {
        k: v for k, v in second.items() if k != account
    }
    before, after = json.loads(first[account]), json.loads(second[account])
    assert before.pop("token_uri") == info["fcm_token_uri"]
    assert after.pop("token_uri") == again["fcm_token_uri"]
    assert before == after
    assert again["credentials"] == info["credentials"]
    for private in ("ca-key.pem", "server-key.pem", "credentials/vapid-private.pem"):
        assert (state / private).stat().st_mode & 0o777 == 0o600
