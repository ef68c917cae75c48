"""The keystore: provider API keys and root keys, sealed under the user's passphrase.

The file is JSON, mode 0600:

    {"capwallet_keystore": 1,
     "kdf": {"name": "argon2id", "salt": <b64>, "opslimit": <int>, "memlimit": <int>},
     "box": <b64 of SecretBox(key).encrypt(plaintext)>}    # 24-byte nonce + MAC + ciphertext

key = Argon2id(passphrase, salt, opslimit, memlimit), 32 bytes (pynacl's pwhash). The limits are
stored so a file sealed with one setting opens with any build. New files use the MODERATE
limits (about a second, 256 MiB); CAPWALLET_KDF_LIMITS=interactive selects the fast limits for
tests and scripts. The plaintext is JSON with the providers (name, key, base URL) and the root
keys. Nothing here ever prints or logs a key: reprs name providers and key ids only.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import secrets
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret

from capwallet.keys import Keyring, RootKey
from capwallet.wallet.home import write_private

ENV_PASSPHRASE = "CAPWALLET_PASSPHRASE"  # noqa: S105  (the variable's name, not a secret)
ENV_LIMITS = "CAPWALLET_KDF_LIMITS"
LIMITS = {
    "interactive": (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
    "moderate": (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
    "sensitive": (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
}
# Bounds on limits read from a file, so a tampered file cannot make unlocking take forever.
_MAX_OPS = argon2id.OPSLIMIT_SENSITIVE
_MAX_MEM = argon2id.MEMLIMIT_SENSITIVE

# What each provider's own SDK uses as base URL (OpenAI-flavor APIs end in /v1).
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
APIS = ("openai", "anthropic")


class KeystoreError(Exception):
    """The keystore cannot be opened or read; the message is one line for the user."""


class WrongPassphrase(KeystoreError):
    pass


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    """A provider account. ``repr`` never shows the key."""

    name: str
    api: str  # the API flavor: openai | anthropic
    base_url: str
    added_at: int
    key: str

    def __repr__(self) -> str:
        return f"ProviderEntry(name={self.name!r}, api={self.api!r}, base_url={self.base_url!r})"

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "api": self.api, "base_url": self.base_url,
                "added_at": self.added_at}


def kdf_limits() -> tuple[int, int]:
    name = os.environ.get(ENV_LIMITS, "moderate").strip().lower() or "moderate"
    if name not in LIMITS:
        raise KeystoreError(f"{ENV_LIMITS} must be one of {', '.join(LIMITS)}, not {name!r}")
    return LIMITS[name]


def _derive(passphrase: str, salt: bytes, ops: int, mem: int) -> bytes:
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase.encode("utf-8"), salt, opslimit=ops,
        memlimit=mem,
    )


class Keystore:
    """An unlocked keystore. Changes are written with ``save()``."""

    def __init__(self, path: Path, box_key: bytes, kdf: dict[str, Any], data: dict[str, Any]):
        self.path = path
        self._box_key = box_key
        self._kdf = kdf
        self._data = data

    def __repr__(self) -> str:
        return f"Keystore(path={str(self.path)!r}, providers={sorted(self.providers)})"

    # --- life cycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, passphrase: str, limits: str | None = None) -> Keystore:
        """A new keystore with one fresh root key; refuses to replace an existing file.

        ``limits`` names the Argon2id limits (default: $CAPWALLET_KDF_LIMITS or moderate).
        """
        if path.exists():
            raise KeystoreError(f"a keystore already exists at {path}")
        if not passphrase:
            raise KeystoreError("the passphrase must not be empty")
        ops, mem = LIMITS[limits] if limits is not None else kdf_limits()
        salt = secrets.token_bytes(argon2id.SALTBYTES)
        kdf = {"name": "argon2id", "salt": _b64(salt), "opslimit": ops, "memlimit": mem}
        key = RootKey.generate()
        now = int(time.time())
        data: dict[str, Any] = {
            "providers": {},
            "root_keys": [{"key_id": key.key_id.hex(), "key": key.secret.hex(), "created_at": now}],
            "current_key": key.key_id.hex(),
        }
        store = cls(path, _derive(passphrase, salt, ops, mem), kdf, data)
        store.save()
        return store

    @classmethod
    def open(cls, path: Path, passphrase: str) -> Keystore:
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise KeystoreError(
                f"no keystore at {path}: run `capwallet init` first"
            ) from None
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"cannot read the keystore at {path}: {exc}") from None
        try:
            if doc.get("capwallet_keystore") != 1:
                raise ValueError("not a capwallet keystore (version 1)")
            kdf = doc["kdf"]
            if kdf.get("name") != "argon2id":
                raise ValueError(f"unknown key derivation {kdf.get('name')!r}")
            salt = _unb64(kdf["salt"])
            ops, mem = int(kdf["opslimit"]), int(kdf["memlimit"])
            in_range = (argon2id.OPSLIMIT_MIN <= ops <= _MAX_OPS
                        and argon2id.MEMLIMIT_MIN <= mem <= _MAX_MEM)
            if len(salt) != argon2id.SALTBYTES or not in_range:
                raise ValueError("key derivation parameters are out of range")
            sealed = _unb64(doc["box"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeystoreError(f"the keystore at {path} is damaged: {exc}") from None
        key = _derive(passphrase, salt, ops, mem)
        try:
            plain = nacl.secret.SecretBox(key).decrypt(sealed)
        except nacl.exceptions.CryptoError:
            raise WrongPassphrase(f"wrong passphrase for the keystore at {path}") from None
        return cls(path, key, dict(kdf), json.loads(plain))

    def save(self) -> None:
        plain = json.dumps(self._data, sort_keys=True).encode("utf-8")
        sealed = nacl.secret.SecretBox(self._box_key).encrypt(plain)
        doc = {"capwallet_keystore": 1, "kdf": self._kdf, "box": _b64(bytes(sealed))}
        write_private(self.path, (json.dumps(doc, indent=1) + "\n").encode("ascii"))

    # --- providers --------------------------------------------------------------------------

    @property
    def providers(self) -> dict[str, ProviderEntry]:
        out: dict[str, ProviderEntry] = {}
        for name, p in self._data["providers"].items():
            out[name] = ProviderEntry(
                name, p.get("api", "openai"), p["base_url"], int(p["added_at"]), p["key"]
            )
        return out

    def provider_key(self, name: str) -> str:
        """The API key of provider ``name``; KeyError if there is none."""
        return str(self._data["providers"][name]["key"])

    def add_provider(self, name: str, key: str, base_url: str, api: str) -> None:
        if api not in APIS:
            raise KeystoreError(f"api must be one of {', '.join(APIS)}")
        self._data["providers"][name] = {
            "key": key, "api": api, "base_url": base_url.rstrip("/"),
            "added_at": int(time.time()),
        }

    def remove_provider(self, name: str) -> bool:
        return self._data["providers"].pop(name, None) is not None

    # --- root keys --------------------------------------------------------------------------

    @property
    def root_keys(self) -> list[RootKey]:
        return [
            RootKey(bytes.fromhex(k["key_id"]), bytes.fromhex(k["key"]))
            for k in self._data["root_keys"]
        ]

    @property
    def current_root_key(self) -> RootKey:
        current = self._data["current_key"]
        for k in self.root_keys:
            if k.key_id.hex() == current:
                return k
        raise KeystoreError("the keystore names a current root key it does not hold")

    def root_key(self, key_id: bytes) -> RootKey | None:
        for k in self.root_keys:
            if k.key_id == key_id:
                return k
        return None

    def keyring(self) -> Keyring:
        return Keyring(self.root_keys)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def has_terminal() -> bool:
    """Is there a terminal to ask on? Standard input may be a pipe (the key) while the
    process still has its controlling terminal, which getpass uses."""
    if sys.stdin.isatty():
        return True
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


def read_passphrase(*, confirm: bool = False, prompt: str = "Wallet passphrase: ") -> str:
    """$CAPWALLET_PASSPHRASE for scripts, else ask at the terminal (twice when ``confirm``)."""
    env = os.environ.get(ENV_PASSPHRASE)
    if env is not None:
        if not env:
            raise KeystoreError(f"{ENV_PASSPHRASE} is set but empty")
        return env
    if not has_terminal():
        raise KeystoreError(
            f"no passphrase: set {ENV_PASSPHRASE} or run this command at a terminal"
        )
    # getpass asks on /dev/tty, so `echo $KEY | capwallet provider add openai` at a terminal
    # reads the key from the pipe and the passphrase from the terminal.
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise KeystoreError("the two passphrases differ")
    if not first:
        raise KeystoreError("the passphrase must not be empty")
    return first


def read_passphrase_file(path: str) -> str:
    """The passphrase from a file, for a server that starts with no one at a console.

    The file must be a regular file that only its owner can read (a systemd credential is
    0400 in a private directory; a container secret must be mounted with mode 0400): one
    readable by group or others is refused, because anyone who reads it holds every provider
    key in the wallet. One trailing newline is dropped (``echo pass > file`` writes one).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise KeystoreError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeystoreError(f"the passphrase file {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeystoreError(
                f"the passphrase file {path} is readable by group or others (mode {mode:04o}); "
                f"make it private first: chmod 600 {path}"
            )
        raw = f.read(4097)
    if len(raw) > 4096:
        raise KeystoreError(f"the passphrase file {path} is longer than 4096 bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeystoreError(f"the passphrase file {path} is not UTF-8 text") from None
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if not text:
        raise KeystoreError(f"the passphrase file {path} is empty")
    return text
