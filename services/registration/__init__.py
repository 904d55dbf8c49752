"""The Registration service (herald.registration.v1.RegistrationService)."""
