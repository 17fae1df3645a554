"""Ed25519 key pairs, one per service, under ``CHASSIS["KEYS_DIR"]``.

``<service>.private.pem`` signs what the service issues (user tokens for
user_service, service tokens for every caller); ``<service>.public.pem`` is
what the others verify with. A missing pair is generated on first use; the
private file is created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def private_path(keys_dir: Path, service: str) -> Path:
    return Path(keys_dir) / f"{service}.private.pem"


def public_path(keys_dir: Path, service: str) -> Path:
    return Path(keys_dir) / f"{service}.public.pem"


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
    ensure_key_pair(Path(keys_dir), service)
    return _read_private(private_path(Path(keys_dir), service))


@functools.lru_cache(maxsize=16)
def load_public_key(keys_dir: str, service: str) -> Ed25519PublicKey:
    """The public key of ``service``; FileNotFoundError when it has none yet."""
    return serialization.load_pem_public_key(public_path(Path(keys_dir), service).read_bytes())
