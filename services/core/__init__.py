"""Herald's shared runtime: configuration, server bootstrap, errors, logging, Redis, telemetry.

Every service builds on these modules instead of writing its own.
"""
