"""The lab's parts, written down once: its apps, their ports and schemas, the fault kinds, the saga modes.

Everything that needs to know which services exist reads this module: the
chassis' settings (default peer URLs), labctl (what it sets up and runs), the
dashboard (what it watches), the load tests (what they target) and the
compose tests. It imports nothing but the standard library, so processes
without Django (labctl's key job, Locust) import it as well as the services do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One Django project of the lab: a service, or the dashboard."""

    name: str  # short name: issuer of its tokens, supervisor program, env/key/log file names
    directory: str  # project dir relative to the repository root
    port: int  # where it listens on one machine (and in docker-compose)
    schema: str  # its MySQL schema, also the name of its MySQL user
    redis_db: int  # its own Redis database number
    label: str  # what a page calls it

    @property
    def env_var(self) -> str:
        """Name of the variable that gives peers this part's base URL."""
        return f"{self.name.upper()}_SERVICE_URL"

    @property
    def default_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


SERVICES: tuple[Part, ...] = (
    Part("user", "user_service", 8001, "lab_users", 0, "Users"),
    Part("order", "order_service", 8002, "lab_orders", 1, "Orders"),
    Part("inventory", "inventory_service", 8003, "lab_inventory", 2, "Inventory"),
    Part("payment", "payment_service", 8004, "lab_payments", 3, "Payments"),
)
# The dashboard is a Django project like the services (own schema, keys and
# env file) but serves pages, not an API.
DASHBOARD = Part("dashboard", "dashboard", 8000, "lab_dashboard", 4, "Dashboard")
APPS: tuple[Part, ...] = (*SERVICES, DASHBOARD)

SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)
APP_BY_NAME: dict[str, Part] = {a.name: a for a in APPS}

# What a service's /_lab/faults/ plays (chassis.lab.faults); labctl adds "process" faults of its own.
FAULT_KINDS: tuple[str, ...] = ("latency", "error", "outage", "database", "dependency")
# How order_service runs its checkout saga: in the request ("sync", the default) or on its Celery worker.
SAGA_MODES: tuple[str, ...] = ("sync", "async")
DEFAULT_SAGA_MODE = SAGA_MODES[0]

# The Faults page's named faults: (service, the fault's body). The dashboard's preset buttons PUT them,
# and a lab's solve applies the very fault its text tells the student to click.
PRESET_FAULTS: dict[str, tuple[str, dict]] = {
    "payment-outage": ("payment", {"kind": "outage", "ttl_seconds": 120}),
    "slow-inventory": ("inventory", {"kind": "latency", "delay_ms": 800, "jitter_ms": 100}),
    "flaky-inventory": ("inventory", {"kind": "error", "status": 503, "probability": 0.3}),
    "orders-db-down": ("order", {"kind": "database", "mode": "fail"}),
    "inventory-db-down": ("inventory", {"kind": "database", "mode": "fail", "ttl_seconds": 600}),
    "payment-answers-lost": (
        "payment",
        {
            "kind": "error",
            "mode": "after",
            "status": 503,
            "path_prefix": "/internal/charges/",
            "method": "POST",
            "ttl_seconds": 300,
        },
    ),
}


# A service that calls no peer has no breaker, but its fallback switch may still govern something of its own:
# what it serves from its last good copy when its own database fails (the Resilience page shows that switch).
OWN_FALLBACKS: dict[str, str] = {
    "inventory": "serve the catalog's last good page, marked stale, when its database fails (never stock to reserve)",
}


def preset_fault(slug: str) -> dict:
    """The body a preset PUTs on its service's ``/_lab/faults/``, its id included (``preset-<slug>``)."""
    return {"id": f"preset-{slug}", **PRESET_FAULTS[slug][1]}
