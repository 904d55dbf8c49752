"""`python -m services.campaign`: run the Campaign service."""

from services.campaign.spec import SPEC
from services.core.server import main

main(SPEC)
