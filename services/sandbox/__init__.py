"""Provider sandboxes: local APNs, FCM and Web Push servers for tests, CI and the demo.

Start them in-process with `SandboxStack.start(...)`, or as a process with
`python -m services.sandbox serve`. See docs/sandboxes.md.
"""

from .faults import FaultBook, FaultRule
from .stack import SandboxPorts, SandboxStack

__all__ = ["FaultBook", "FaultRule", "SandboxPorts", "SandboxStack"]
