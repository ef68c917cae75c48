"""The sealed keystore: Argon2id + SecretBox, mode 0600, wrong passphrase, no key on disk."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest

from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore, KeystoreError, WrongPassphrase

from .conftest import PASSPHRASE


def test_create_open_round_trip(home: WalletHome) -> None:
    ks = Keystore.open(home.keystore_path, PASSPHRASE)
    assert ks.provider_key("openai") == "sk-test-never-shown-0123456789"
    assert len(ks.root_keys) == 1
    assert ks.keyring()[ks.current_root_key.key_id] == ks.current_root_key.secret
    ks.add_provider("anthropic", "sk-ant-xyz", "https://api.anthropic.com", "anthropic")
    ks.remove_provider("openai")
    ks.save()
    again = Keystore.open(home.keystore_path, PASSPHRASE)
    assert sorted(again.providers) == ["anthropic"]
    assert again.current_root_key == ks.current_root_key


def test_files_are_private_and_hold_no_plaintext(home: WalletHome) -> None:
    assert stat.S_IMODE(os.stat(home.path).st_mode) == 0o700
    for f in (home.keystore_path, home.db_path):
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    raw = home.keystore_path.read_text()
    ks = Keystore.open(home.keystore_path, PASSPHRASE)
    assert "sk-test-never-shown" not in raw
    assert ks.current_root_key.secret.hex() not in raw
    doc = json.loads(raw)
    # The KDF parameters travel with the file; tests use the fast interactive limits.
    assert doc["kdf"]["name"] == "argon2id"
    assert doc["kdf"]["opslimit"] == argon2id.OPSLIMIT_INTERACTIVE
    assert doc["kdf"]["memlimit"] == argon2id.MEMLIMIT_INTERACTIVE


def test_default_limits_are_moderate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPWALLET_KDF_LIMITS")
    Keystore.create(tmp_path / "ks.json", "pw")
    kdf = json.loads((tmp_path / "ks.json").read_text())["kdf"]
    assert (kdf["opslimit"], kdf["memlimit"]) == (
        argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)


def test_wrong_passphrase(home: WalletHome) -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Keystore.open(home.keystore_path, "not the passphrase")


def test_tampered_file_is_refused(home: WalletHome) -> None:
    doc = json.loads(home.keystore_path.read_text())
    sealed = bytearray(__import__("base64").b64decode(doc["box"]))
    sealed[-1] ^= 1
    doc["box"] = __import__("base64").b64encode(bytes(sealed)).decode()
    home.keystore_path.write_text(json.dumps(doc))
    with pytest.raises(WrongPassphrase):
        Keystore.open(home.keystore_path, PASSPHRASE)
    doc["kdf"]["memlimit"] = 1 << 40  # a tampered limit must not make unlocking hang
    home.keystore_path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="out of range"):
        Keystore.open(home.keystore_path, PASSPHRASE)


def test_repr_never_shows_keys(home: WalletHome) -> None:
    ks = Keystore.open(home.keystore_path, PASSPHRASE)
    text = repr(ks) + repr(ks.providers) + repr(ks.root_keys)
    assert "sk-test" not in text and ks.current_root_key.secret.hex() not in text


def test_create_refuses_to_overwrite(home: WalletHome) -> None:
    with pytest.raises(KeystoreError, match="already exists"):
        Keystore.create(home.keystore_path, "other")
