"""The Identity service (herald.identity.v1.IdentityService)."""
