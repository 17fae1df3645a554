"""A scripted HTTP service for the tests: records what the dashboard sends, answers what the test says."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeService:
    """``routes[(method, path)] = (status, body)`` (body: dict → JSON, str → text); unknown routes answer 404."""

    def __init__(self):
        self.routes: dict[tuple[str, str], tuple[int, object]] = {}
        self.route_headers: dict[tuple[str, str], dict[str, str]] = {}
        self.requests: list[dict] = []
        self.delay = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": path,
                        "query": self.path.partition("?")[2],
                        "headers": dict(self.headers),
                        "json": json.loads(raw) if raw else None,
                    }
                )
                if fake.delay:
                    time.sleep(fake.delay)
                status, body = fake.routes.get(
                    (self.command, path), (404, {"code": "not_found", "message": "no route"})
                )
                if isinstance(body, (dict, list)):
                    payload, kind = json.dumps(body).encode(), "application/json"
                else:
                    payload, kind = str(body).encode(), "text/plain; version=0.0.4"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in fake.route_headers.get((self.command, path), {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that gave up (the dashboard's timeout, on purpose) is not an error worth a traceback.
        self.server.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def on(self, method: str, path: str, status: int, body: object = None, *, headers: dict | None = None) -> None:
        self.routes[(method, path)] = (status, {} if body is None else body)
        self.route_headers[(method, path)] = headers or {}

    def sent(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
