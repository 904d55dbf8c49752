"""`python -m services.identity`: run the Identity service."""

from services.core.server import main
from services.identity.spec import SPEC

main(SPEC)
