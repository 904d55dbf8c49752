"""Several server processes for one service, sharing its port with SO_REUSEPORT.

Python serves from one core per process, so `HERALD_PROCESSES=N` makes
`python -m services.<name>` a small supervisor: it starts N copies of itself (each
marked with HERALD_WORKER so it serves instead of supervising), forwards SIGTERM and
SIGINT to them so each drains its in-flight calls, and stops all of them if one dies,
so an orchestrator sees the failure and restarts the pod.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING

from services.core.config import ConfigError, Settings

if TYPE_CHECKING:
    from services.core.server import ServiceSpec

WORKER_VAR = "HERALD_WORKER"
log = logging.getLogger("herald.supervisor")


def supervise(spec: ServiceSpec, settings: Settings) -> int:
    """Run `settings.processes` workers until a signal or a worker's death; the exit code."""
    if settings.port_of(spec.name) == 0:
        raise ConfigError(f"HERALD_PROCESSES > 1 needs a fixed HERALD_{spec.name.upper()}_PORT")
    workers = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", f"services.{spec.name}"],
            env={**os.environ, WORKER_VAR: str(index)},
        )
        for index in range(settings.processes)
    ]
    log.info("supervising", extra={"processes": settings.processes})
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stopping and all(w.poll() is None for w in workers):
        time.sleep(0.2)
    if not stopping:  # a worker died on its own: take the others down with it
        log.error("a worker exited; stopping the others")
        forward(signal.SIGTERM, None)
    deadline = time.monotonic() + settings.shutdown_grace_seconds + 5
    for worker in workers:
        try:
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    # A worker still starting when the signal came has no handler yet and ends by it:
    # that is a clean stop too.
    clean = (0, -signal.SIGTERM, -signal.SIGINT)
    return 0 if stopping and all(w.returncode in clean for w in workers) else 1
