"""A throwaway Django project for the benchmark's baselines: no chassis, nothing but the view.

Started by ``loadtests/bench.py`` with the lab's gunicorn options on a free
loopback port. ``/ping/`` is the ceiling (a bare ``JsonResponse``),
``/products/`` a bare DRF list of the catalog's rows (its own table, filled
from ``inventory_service/catalog/seed.py``).
"""
