"""Settings package of the order service."""
