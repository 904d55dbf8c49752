"""Campaign's Redis keys (documented in docs/keys/campaign.md).

Keys of one campaign share the hash tag `{c:<id>}` so its scripts and transactions
run on one Cluster slot; per-user frequency histories are tagged by (app, user).
"""

from __future__ import annotations

from services.core.redis import hash_tag

PREFIX = "cmp"


def _c(campaign_id: str) -> str:
    return f"{PREFIX}:{hash_tag('c:' + campaign_id)}"


def campaign(campaign_id: str) -> str:
    return _c(campaign_id)


def report(campaign_id: str) -> str:
    return f"{_c(campaign_id)}:report"


def held(campaign_id: str) -> str:
    return f"{_c(campaign_id)}:held"


def finals(campaign_id: str) -> str:
    return f"{_c(campaign_id)}:finals"


def opened(campaign_id: str) -> str:
    return f"{_c(campaign_id)}:opened"


def dismissed(campaign_id: str) -> str:
    return f"{_c(campaign_id)}:dismissed"


def events(campaign_id: str) -> str:
    return f"{_c(campaign_id)}:events"


def lease(campaign_id: str) -> str:
    return f"{_c(campaign_id)}:lease"


def app_campaigns(app_id: str) -> str:
    return f"{PREFIX}:{hash_tag('a:' + app_id)}:campaigns"


def create_request(app_id: str, request_id: str) -> str:
    return f"{PREFIX}:{hash_tag('a:' + app_id)}:req:{request_id}"


def send_request(app_id: str, request_id: str) -> str:
    return f"{PREFIX}:{hash_tag('a:' + app_id)}:send:{request_id}"


def app_event(app_id: str, event_id: str) -> str:
    return f"{PREFIX}:{hash_tag('a:' + app_id)}:evt:{event_id}"


def frequency(app_id: str, user_id: str) -> str:
    return f"{PREFIX}:{hash_tag('f:' + app_id + ':' + user_id)}:sends"


DUE = f"{PREFIX}:due"  # campaigns waiting for their fan-out: score = due time (ms)
OUTCOMES_CURSOR = f"{PREFIX}:outcomes:cursor"
OUTCOMES_LEASE = f"{PREFIX}:outcomes:lease"
