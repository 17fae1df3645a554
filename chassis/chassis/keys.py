"""Ed25519 keys: a service's own private key and every identity's public key, under ``CHASSIS["KEYS_DIR"]``.

A service's keys dir is its own: ``<service>.private.pem`` signs what the
service issues (user tokens for user_service, service tokens for every
caller), and ``<name>.public.pem`` of every identity is what it verifies with.
No other identity's private key belongs there: :func:`load_private_key`
refuses a dir that holds one, and it is the only function here that opens a
private key, so a service never reads another issuer's key. ``labctl keys``
writes one such dir per identity (``var/keys/<service>/``); docker-compose and
Kubernetes mount only that dir, or Secret, into the service's container.

A missing pair is generated on first use (tests, a fresh checkout); the
private file is created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_SUFFIX = ".private.pem"
PUBLIC_SUFFIX = ".public.pem"


class ForeignPrivateKey(Exception):
    """A service's keys dir holds another identity's private key: it must not be able to sign as that one."""


def private_path(keys_dir: Path, service: str) -> Path:
    return Path(keys_dir) / f"{service}{PRIVATE_SUFFIX}"


def public_path(keys_dir: Path, service: str) -> Path:
    return Path(keys_dir) / f"{service}{PUBLIC_SUFFIX}"


def foreign_private_keys(keys_dir: Path, service: str) -> list[str]:
    """The names of the private keys in ``keys_dir`` that are not ``service``'s (listed, never opened)."""
    keys_dir = Path(keys_dir)
    if not keys_dir.is_dir():
        return []
    own = private_path(keys_dir, service).name
    return sorted(p.name for p in keys_dir.iterdir() if p.name.endswith(PRIVATE_SUFFIX) and p.name != own)


def check_own_keys_dir(keys_dir: Path, service: str) -> None:
    """Refuse a keys dir that holds a private key other than ``service``'s own."""
    foreign = foreign_private_keys(keys_dir, service)
    if foreign:
        raise ForeignPrivateKey(
            f"{keys_dir} is the {service} service's keys dir but holds {', '.join(foreign)}: a service holds only "
            f"its own private key and the others' public keys. Run `labctl keys` (it moves each private key into "
            f"var/keys/<service>/) and point LAB_KEYS_DIR at var/keys/{service}."
        )


def ensure_key_pair(keys_dir: Path, service: str) -> bool:
    """Create the service's key pair if it does not exist. Returns True when created.

    Safe when several processes race: the private key is written with O_EXCL,
    the loser reads the winner's file.
    """
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    priv = private_path(keys_dir, service)
    if priv.exists():
        if not public_path(keys_dir, service).exists():
            _write_public(keys_dir, service, _read_private(priv))
        return False
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    _write_public(keys_dir, service, key)
    return True


def _read_private(path: Path) -> Ed25519PrivateKey:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _write_public(keys_dir: Path, service: str, key: Ed25519PrivateKey) -> None:
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    tmp = public_path(keys_dir, service).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pem)
    tmp.replace(public_path(keys_dir, service))


@functools.lru_cache(maxsize=16)
def load_private_key(keys_dir: str, service: str) -> Ed25519PrivateKey:
    """``service``'s private key from its own keys dir; :class:`ForeignPrivateKey` if the dir holds another's."""
    check_own_keys_dir(Path(keys_dir), service)
    ensure_key_pair(Path(keys_dir), service)
    return _read_private(private_path(Path(keys_dir), service))


@functools.lru_cache(maxsize=16)
def load_public_key(keys_dir: str, service: str) -> Ed25519PublicKey:
    """The public key of ``service``; FileNotFoundError when it has none yet."""
    return serialization.load_pem_public_key(public_path(Path(keys_dir), service).read_bytes())
