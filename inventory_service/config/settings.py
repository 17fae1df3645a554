"""Settings of inventory_service: the chassis settings plus what is the catalog's own.

Every value comes from the environment (see ``.env.example``); the chassis
documents the shared ones.
"""

from pathlib import Path

from chassis.settings import build

BASE_DIR = Path(__file__).resolve().parent.parent

globals().update(
    build(
        service="inventory",
        base_dir=BASE_DIR,
        apps=["catalog"],
        title="Inventory service",
        description=(
            "The lab's catalog and stock. Anyone browses products; staff create, edit and restock them. "
            "order_service reserves stock for a checkout, then commits or releases the reservation. "
            "Every stock change is written to an append-only ledger (movements), and stock is conserved: "
            "initial + restocked = available + reserved + sold."
        ),
    )
)

# CSRF protects cookie-based sessions; this service has none (bearer tokens only, no session or login).
SILENCED_SYSTEM_CHECKS = ["security.W003"]
