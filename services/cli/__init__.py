"""`herald`: the command-line tool for Herald's four gRPC services (docs/cli.md)."""

import os

# gRPC's C core logs failed TLS handshakes on stderr at INFO; the CLI reports every
# failure itself (services/cli/output.py), so only gRPC's errors may speak.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
