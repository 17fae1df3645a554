"""Gunicorn hooks every lab service runs with (``-c python:chassis.gunicorn_conf``).

A dead worker's metric files are marked so its live gauges stop counting.
"""

import os


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
