"""The Delivery service (herald.delivery.v1.DeliveryService)."""
