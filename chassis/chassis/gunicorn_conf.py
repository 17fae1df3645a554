"""Gunicorn hooks every lab service runs with (``-c python:chassis.gunicorn_conf``).

A worker tells the resilience switches how many threads serve requests (the
bulkhead's default is sized from it); a dead worker's metric files are marked so
its live gauges stop counting.
"""

import os

# Gunicorn 27's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl):
# with five services (and test labs) on one machine they would fight over it.
control_socket_disable = True

# Gunicorn trusts X-Forwarded-Proto (and its kin) from 127.0.0.1 by default, so anything on the
# machine could make a service believe a request came over HTTPS and steer the URLs it builds
# (the order's Location header). Nothing fronts the services on one machine: trust nobody unless
# the operator names the proxy (FORWARDED_ALLOW_IPS=10.0.0.5, as behind an ingress).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")

# Peers keep pooled connections to each other; gunicorn's default of 2 s closes
# them so soon that a reused one can die under a request that cannot be retried.
keepalive = 30


def post_worker_init(worker):
    # The bulkhead's default is sized from the threads that serve requests (chassis.lab.resilience).
    from chassis.lab import resilience

    resilience.set_serving_threads(worker.cfg.threads)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
