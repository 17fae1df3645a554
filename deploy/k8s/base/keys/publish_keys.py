"""The keys Job of deploy/k8s: an Ed25519 key pair per signing identity, one Secret per app.

Each app's Secret ``<app>-keys`` holds its own private key, every identity's
public key, a random Django secret key (``django-secret-key``, read through
``DJANGO_SECRET_KEY_FILE``) and its MySQL user's random password
(``database-password``, read through ``DATABASE_PASSWORD_FILE``); no pod ever
holds another app's private key. ``mysql-secrets``, mounted by MySQL only,
holds root's password and each app's user's (``deploy/mysql-init``). The
Secret is mounted as the app's keys dir, the layout ``labctl keys`` writes in
``var/keys/<name>/``: ``$LAB_KEYS_DIR/<name>.private.pem`` to sign,
``<other>.public.pem`` to verify. Locust signs the lab admin's calls as the
dashboard, so ``locust-keys`` holds the dashboard's key (not its Django secret
nor its database password), as docker-compose.yml mounts the dashboard's keys
volume into Locust.

Idempotent: when every Secret exists the Job leaves them alone, so keys
survive a re-apply. When one is missing, every pair is made anew and every
Secret written; pods already running keep the keys they read until restarted
(``kubectl -n lab rollout restart deployment``). The database passwords are
the exception: MySQL set them when it first started, so once ``mysql-secrets``
exists its passwords are read back and kept.

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
DATABASE_SECRETS = "mysql-secrets"
# Each identity's MySQL user (its schema's name).
DATABASE_USERS = {app.name: app.schema for app in parts.APPS}


def secret_files(keys_dir: Path, owner: str, *, django_secret: bool = True) -> dict[str, bytes]:
    """What one Secret holds: ``owner``'s own keys dir (``keys_dir/<owner>/``) as ``labctl keys`` wrote it.

    Its private key, every identity's public key and (``django_secret``) its Django secret key
    and its database password.
    """
    own = keys_dir / owner
    files = {f"{owner}.private.pem": (own / f"{owner}.private.pem").read_bytes()}
    for app in parts.APPS:
        files[f"{app.name}.public.pem"] = (own / f"{app.name}.public.pem").read_bytes()
    if django_secret:
        files["django-secret-key"] = (own / "django-secret-key").read_bytes()
        files["database-password"] = (own / "database-password").read_bytes()
    return files


def database_secret_files(keys_dir: Path) -> dict[str, bytes]:
    """What ``mysql-secrets`` holds: ``keys_dir/mysql/`` as ``labctl keys --database-passwords`` wrote it."""
    server = keys_dir / provision.DATABASE_SECRETS_DIR
    return {p.name: p.read_bytes() for p in sorted(server.iterdir())}


def _manifest(name: str, namespace: str, files: dict[str, bytes]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "keys"}},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in files.items()},
    }


def secret_manifests(keys_dir: Path, namespace: str) -> list[dict]:
    """Every Secret the apps and MySQL mount, from the key pairs and passwords under ``keys_dir``."""
    return [
        *(
            _manifest(name, namespace, secret_files(keys_dir, owner, django_secret=name != "locust-keys"))
            for name, owner in OWNERS.items()
        ),
        _manifest(DATABASE_SECRETS, namespace, database_secret_files(keys_dir)),
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

    def read(self, name: str) -> dict[str, bytes] | None:
        """The files of the Secret ``name``, or None when there is none."""
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/namespaces/{self.namespace}/secrets/{name}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as response:
                data = json.load(response).get("data") or {}
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise RuntimeError(f"GET secrets/{name}: HTTP {exc.code} {exc.read()[:300]!r}") from exc
        return {k: base64.b64decode(v) for k, v in data.items()}

    def write(self, manifest: dict) -> None:
        name = manifest["metadata"]["name"]
        if self.exists(name):
            self._call("PUT", f"/{name}", manifest)
        else:
            self._call("POST", "", manifest)


def publish(api: Api, echo=print) -> list[str]:
    """Write every key Secret unless all exist already; return the names written.

    The database passwords of an existing ``mysql-secrets`` are kept (MySQL has them already).
    """
    names = [*OWNERS, DATABASE_SECRETS]
    missing = [name for name in names if not api.exists(name)]
    if not missing:
        echo(f"keys: all {len(names)} Secrets present in {api.namespace}, kept")
        return []
    echo(f"keys: missing {', '.join(missing)}; making every key pair anew")
    with tempfile.TemporaryDirectory() as tmp:
        provision.ensure_keys(Path(tmp), [app.name for app in parts.APPS])
        provision.ensure_secret_files(Path(tmp), [app.name for app in parts.APPS])
        kept = api.read(DATABASE_SECRETS)
        if kept:
            server = Path(tmp) / provision.DATABASE_SECRETS_DIR
            server.mkdir()
            for file, password in kept.items():
                (server / file).write_bytes(password)
        provision.ensure_database_passwords(Path(tmp), DATABASE_USERS)
        manifests = secret_manifests(Path(tmp), api.namespace)
    for manifest in manifests:
        api.write(manifest)
    names = [m["metadata"]["name"] for m in manifests]
    echo(f"keys: wrote {', '.join(names)}")
    return names


if __name__ == "__main__":
    publish(Api.in_cluster())
    sys.exit(0)
