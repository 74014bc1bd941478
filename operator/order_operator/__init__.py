"""order_operator."""
