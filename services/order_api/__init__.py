"""order_api."""
