import os
import stat
import sys
import time
from pathlib import Path

import jwt
import pytest

from chassis import auth, keys
from chassis.testing import bearer, service_token, user_token


def test_key_pair_is_created_once_with_private_mode_0600(tmp_path):
    """Ensure keys are generated on first use, private file 0600, never overwritten."""
    assert keys.ensure_key_pair(tmp_path, "payment") is True
    private = keys.private_path(tmp_path, "payment")
    before = private.read_bytes()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert keys.public_path(tmp_path, "payment").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert keys.ensure_key_pair(tmp_path, "payment") is False
    assert private.read_bytes() == before


def test_missing_public_key_is_rebuilt_from_private(tmp_path):
    """Ensure a deleted public key is derived again from the private one."""
    keys.ensure_key_pair(tmp_path, "order")
    public = keys.public_path(tmp_path, "order")
    original = public.read_text()
    public.unlink()
    keys.ensure_key_pair(tmp_path, "order")
    assert public.read_text() == original


def test_a_service_signs_as_itself_only(settings):
    """Ensure a service cannot sign a token in another issuer's name: the chassis refuses before any key is read."""
    assert settings.CHASSIS["SERVICE"] == "inventory"
    for other in ("user", "order", "payment", "dashboard"):
        with pytest.raises(ValueError, match="signs as inventory only"):
            auth.sign({"typ": "access", "sub": "1", "staff": True, "exp": int(time.time()) + 60}, issuer=other)
        assert not keys.private_path(settings.CHASSIS["KEYS_DIR"], other).exists(), other
    token = auth.sign({"typ": "service", "sub": "x", "aud": "order", "exp": int(time.time()) + 60})
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "inventory"


def test_a_keys_dir_holding_another_issuers_private_key_is_refused(settings, tmp_path):
    """Ensure a service given the old shared dir (every private key) refuses to sign rather than hold them all."""
    shared = tmp_path / "keys"
    for name in ("user", "order", "inventory", "payment", "dashboard"):
        keys.ensure_key_pair(shared, name)
    settings.CHASSIS = {**settings.CHASSIS, "KEYS_DIR": shared}
    with pytest.raises(keys.ForeignPrivateKey, match="dashboard.private.pem, order.private.pem, payment.private.pem"):
        auth.service_token("order")
    own = tmp_path / "own"
    keys.ensure_key_pair(own, "inventory")
    settings.CHASSIS = {**settings.CHASSIS, "KEYS_DIR": own}
    assert jwt.decode(auth.service_token("order"), options={"verify_signature": False})["iss"] == "inventory"


def test_the_service_opens_no_private_key_but_its_own(settings, api):
    """Ensure signing, and verifying every issuer's token, opens this service's private key and no other.

    Python's audit hook sees every file the process opens; the peers' tokens are made (with the
    peers' keys, as the peers would) before it starts listening.
    """
    peers = {
        "user": user_token(user_id=7, staff=True),
        **{p: service_token(caller=p, audience="inventory") for p in ("order", "payment", "dashboard")},
    }
    keys.load_private_key.cache_clear()
    keys.load_public_key.cache_clear()
    opened: list[str] = []
    listening = [True]

    def hook(event, args):
        if listening[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)
    try:
        auth._service_tokens.clear()
        auth.service_token("order")
        assert api.get("/whoami/", **bearer(peers["user"])).status_code == 200
        assert api.get("/internal/", **bearer(peers["order"])).status_code == 200
        for name, token in peers.items():
            principal = auth.LabJWTAuthentication().principal_from(auth.verify(token))
            assert (principal.email if name == "user" else principal.name) == (
                "user7@lab.local" if name == "user" else name
            )
    finally:
        listening[0] = False
    private = [Path(p).name for p in opened if p.endswith(".private.pem")]
    assert private == ["inventory.private.pem"]
    # Nor does its keys dir hold another one (the peers' keys made for the test sit in their own dirs).
    own_dir = Path(settings.CHASSIS["KEYS_DIR"])
    assert sorted(p.name for p in own_dir.glob("*.private.pem")) == ["inventory.private.pem"]
    assert {Path(p).name for p in opened if p.endswith(".public.pem")} >= {f"{p}.public.pem" for p in peers}
