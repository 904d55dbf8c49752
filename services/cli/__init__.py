"""`herald`: the command-line tool for Herald's four gRPC services (docs/cli.md)."""
