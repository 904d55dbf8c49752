"""Delivery's queue settings from HERALD_DELIVERY_* variables."""

from __future__ import annotations

import pytest

from services.core.config import ConfigError
from services.delivery.options import DeliveryOptions, RateLimit, parse_rate_limits


def test_defaults_need_no_environment():
    options = DeliveryOptions.from_env({})
    assert options.queue_shards == 8
    assert options.rate_limit("fcm", "any-app") == RateLimit(600_000, 60.0)
    assert options.rate_limit("apns", "any-app") is None


def test_values_are_read_and_typed():
    options = DeliveryOptions.from_env(
        {
            "HERALD_DELIVERY_QUEUE_SHARDS": "16",
            "HERALD_DELIVERY_RECLAIM_SECONDS": "12.5",
            "HERALD_DELIVERY_RECORD_TTL_SECONDS": "3600",
            "HERALD_DELIVERY_WORKERS_ENABLED": "false",
            "HERALD_DELIVERY_RATE_LIMITS": "fcm=1000/1, apns:shop=50/10s",
        }
    )
    assert (options.queue_shards, options.reclaim_seconds, options.record_ttl_seconds) == (
        16,
        12.5,
        3600,
    )
    assert options.workers_enabled is False
    assert options.rate_limit("apns", "shop") == RateLimit(50, 10.0)
    assert options.rate_limit("apns", "other") is None
    assert options.rate_limit("fcm", "x") == RateLimit(1000, 1.0)


def test_bad_values_name_every_variable():
    with pytest.raises(ConfigError) as error:
        DeliveryOptions.from_env(
            {
                "HERALD_DELIVERY_QUEUE_SHARDS": "zero",
                "HERALD_DELIVERY_RECLAIM_SECONDS": "0.1",
                "HERALD_DELIVERY_RATE_LIMITS": "sms=1/1",
            }
        )
    text = str(error.value)
    assert "HERALD_DELIVERY_QUEUE_SHARDS: must be an integer" in text
    assert "HERALD_DELIVERY_RECLAIM_SECONDS: must be at least 0.5" in text
    assert "HERALD_DELIVERY_RATE_LIMITS" in text


def test_rate_limit_burst_is_a_second_of_budget():
    limits = parse_rate_limits("fcm=600000/60,webpush=1/60")
    assert limits[("fcm", "")].burst == 10_000
    assert limits[("webpush", "")].burst == 1
