"""order_common."""
