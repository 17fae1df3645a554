"""Orders: the order lifecycle and the checkout saga that order_service orchestrates."""
