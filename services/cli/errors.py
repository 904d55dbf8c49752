"""What can go wrong in the CLI, and the exit code each kind of failure gets.

Scripts branch on the exit code, so the codes are part of the tool's contract
(docs/cli.md): 0 ok, 1 the server answered with an error (or a send was refused),
2 the command line or a local file is wrong, 3 a service could not be reached.
"""

from __future__ import annotations

import grpc

from services.core.status import ErrorDetails

EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

# A deadline means no answer came, which is what an operator must treat like an
# unreachable service (retry later, check the stack), not like a refusal.
_UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class CliError(Exception):
    """A failure reported to the user; `exit_code` says which kind."""

    exit_code = EXIT_SERVER_ERROR


class UsageError(CliError):
    """The command line or an input file is wrong; nothing was sent."""

    exit_code = EXIT_USAGE


class ServerError(CliError):
    """A service answered a call with an error status (or could not be reached)."""

    def __init__(
        self, details: ErrorDetails, service: str, address: str, method: str, tls: bool = False
    ) -> None:
        super().__init__(details.message)
        self.details = details
        self.service = service
        self.address = address
        self.method = method
        self.tls = tls  # whether the channel used TLS: the hint for a failed connection

    @property
    def unreachable(self) -> bool:
        """No Herald server produced this error: the connection or the deadline failed.

        A server-side UNAVAILABLE (Redis or a dependency down) carries an ErrorInfo
        reason; a transport failure has none.
        """
        return self.details.code in _UNAVAILABLE_CODES and not self.details.reason

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        if self.details.code in _UNAVAILABLE_CODES:
            return EXIT_UNAVAILABLE
        return EXIT_SERVER_ERROR


class OutcomeError(CliError):
    """The call succeeded but what it reports is a failure (a refused send, a failed
    campaign): the output was printed, the exit code must still say so."""
