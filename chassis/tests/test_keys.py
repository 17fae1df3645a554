import stat

from chassis import keys


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
