"""Root keys and key rings. A verifier holds several root keys by id, so keys can rotate.

A key file is JSON, mode 0600: {"capwallet_root_key": 1, "key_id": <16 hex>, "key": <64 hex>}
(lower-case hex; spec/security.md#key-files).
The key id is random, not derived from the key, so it reveals nothing about it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from capwallet.identifier import KEY_ID_BYTES

ROOT_KEY_BYTES = 32
_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RootKey:
    key_id: bytes
    secret: bytes

    def __repr__(self) -> str:  # never show the secret
        return f"RootKey(key_id={self.key_id.hex()!r})"

    @classmethod
    def generate(cls) -> RootKey:
        return cls(secrets.token_bytes(KEY_ID_BYTES), secrets.token_bytes(ROOT_KEY_BYTES))

    def to_json(self) -> str:
        return json.dumps(
            {"capwallet_root_key": 1, "key_id": self.key_id.hex(), "key": self.secret.hex()}
        )

    @classmethod
    def from_json(cls, text: str) -> RootKey:
        try:
            data = json.loads(text)
            if data.get("capwallet_root_key") != 1:
                raise KeyFileError("not a capwallet root key file (version 1)")
            key_hex, secret_hex = data["key_id"], data["key"]
            if not (isinstance(key_hex, str) and _HEX16.fullmatch(key_hex)
                    and isinstance(secret_hex, str) and _HEX64.fullmatch(secret_hex)):
                raise KeyFileError("root key file must hold key_id as 16 and key as 64 "
                                   "lower-case hex digits")
            key_id = bytes.fromhex(key_hex)
            secret = bytes.fromhex(secret_hex)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, KeyFileError):
                raise
            raise KeyFileError("root key file is not valid JSON with key_id and key") from None
        if len(key_id) != KEY_ID_BYTES or len(secret) != ROOT_KEY_BYTES:
            raise KeyFileError("root key file must hold an 8-byte key_id and a 32-byte key")
        return cls(key_id, secret)

    def save(self, path: str | Path) -> None:
        """Write the key file with mode 0600, refusing to overwrite an existing file."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RootKey:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
        return cls.from_json(text)


class Keyring(Mapping[bytes, bytes]):
    """key id -> root key secret. Immutable: a verifier's cache is valid for its keyring."""

    def __init__(self, keys: Iterable[RootKey]) -> None:
        self._keys = {k.key_id: k.secret for k in keys}

    def __getitem__(self, key_id: bytes) -> bytes:
        return self._keys[key_id]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(key_ids={[k.hex() for k in self._keys]})"
