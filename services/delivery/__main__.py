"""`python -m services.delivery`: run the Delivery service."""

from services.core.server import main
from services.delivery.spec import SPEC

main(SPEC)
