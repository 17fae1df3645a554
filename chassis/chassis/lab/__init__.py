"""The lab control surface: fault injection and run-time resilience switches.

Everything here is stored in the service's Django cache (Redis in the lab), so
every worker process of a service sees a change within
``CHASSIS["LAB_STATE_REFRESH"]`` seconds. The HTTP API lives under ``/_lab/``
and only the lab admin may use it.
"""
