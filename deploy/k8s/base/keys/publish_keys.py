"""The keys Job of deploy/k8s: an Ed25519 key pair per signing identity, one Secret per app.

Each app's Secret ``<app>-keys`` holds its own private key, every identity's
public key and a random Django secret key (``django-secret-key``, read through
``DJANGO_SECRET_KEY_FILE``); no pod ever holds another app's private key. The
Secret is mounted as the app's keys dir, the layout ``labctl keys`` writes in
``var/keys/<name>/``: ``$LAB_KEYS_DIR/<name>.private.pem`` to sign,
``<other>.public.pem`` to verify. Locust signs the lab admin's calls as the
dashboard, so ``locust-keys`` holds the dashboard's key (not its Django secret),
as docker-compose.yml mounts the dashboard's keys volume into Locust.

Idempotent: when every Secret exists the Job leaves them alone, so keys
survive a re-apply. When one is missing, every pair is made anew and every
Secret written; pods already running keep the keys they read until restarted
(``kubectl -n lab rollout restart deployment``).

Runs in the keys image (deploy/keys/Dockerfile: cryptography, the chassis,
labctl) with the Job's service account; the API calls use the standard library.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from chassis import parts
from labctl import provision

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Secret name -> the identity whose private key it holds.
OWNERS: dict[str, str] = {
    **{f"{app.name}-keys": app.name for app in parts.APPS},
    "locust-keys": parts.DASHBOARD.name,
}


def secret_files(keys_dir: Path, owner: str, *, django_secret: bool = True) -> dict[str, bytes]:
    """What one Secret holds: ``owner``'s own keys dir (``keys_dir/<owner>/``) as ``labctl keys`` wrote it.

    Its private key, every identity's public key and (``django_secret``) its Django secret key.
    """
    own = keys_dir / owner
    files = {f"{owner}.private.pem": (own / f"{owner}.private.pem").read_bytes()}
    for app in parts.APPS:
        files[f"{app.name}.public.pem"] = (own / f"{app.name}.public.pem").read_bytes()
    if django_secret:
        files["django-secret-key"] = (own / "django-secret-key").read_bytes()
    return files


def secret_manifests(keys_dir: Path, namespace: str) -> list[dict]:
    """Every Secret the apps mount, from the key pairs under ``keys_dir``."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "keys"}},
            "type": "Opaque",
            "data": {
                k: base64.b64encode(v).decode()
                for k, v in secret_files(keys_dir, owner, django_secret=name != "locust-keys").items()
            },
        }
        for name, owner in OWNERS.items()
    ]


class Api:
    """The few calls to the API server this Job makes, authenticated with a bearer token."""

    def __init__(self, base_url: str, token: str, context: ssl.SSLContext | None, namespace: str):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.context = context
        self.namespace = namespace

    @classmethod
    def in_cluster(cls) -> Api:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        return cls(
            f"https://{host}:{port}",
            (SERVICE_ACCOUNT / "token").read_text().strip(),
            ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt")),
            (SERVICE_ACCOUNT / "namespace").read_text().strip(),
        )

    def _call(self, method: str, path: str, body: dict | None = None) -> int:
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/namespaces/{self.namespace}/secrets{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method == "GET":
                return 404
            raise RuntimeError(f"{method} secrets{path}: HTTP {exc.code} {exc.read()[:300]!r}") from exc

    def exists(self, name: str) -> bool:
        return self._call("GET", f"/{name}") == 200

    def write(self, manifest: dict) -> None:
        name = manifest["metadata"]["name"]
        if self.exists(name):
            self._call("PUT", f"/{name}", manifest)
        else:
            self._call("POST", "", manifest)


def publish(api: Api, echo=print) -> list[str]:
    """Write every key Secret unless all exist already; return the names written."""
    missing = [name for name in OWNERS if not api.exists(name)]
    if not missing:
        echo(f"keys: all {len(OWNERS)} Secrets present in {api.namespace}, kept")
        return []
    echo(f"keys: missing {', '.join(missing)}; making every key pair anew")
    with tempfile.TemporaryDirectory() as tmp:
        provision.ensure_keys(Path(tmp), [app.name for app in parts.APPS])
        provision.ensure_secret_files(Path(tmp), [app.name for app in parts.APPS])
        manifests = secret_manifests(Path(tmp), api.namespace)
    for manifest in manifests:
        api.write(manifest)
    names = [m["metadata"]["name"] for m in manifests]
    echo(f"keys: wrote {', '.join(names)}")
    return names


if __name__ == "__main__":
    publish(Api.in_cluster())
    sys.exit(0)
