"""`python -m services.registration`: run the Registration service."""

from services.core.server import main
from services.registration.spec import SPEC

main(SPEC)
