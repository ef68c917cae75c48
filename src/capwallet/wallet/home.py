"""CAPWALLET_HOME: the one folder that holds a wallet's state.

    $CAPWALLET_HOME/            mode 0700 (default ~/.capwallet)
        keystore.json           sealed provider keys and root keys, mode 0600
        wallet.db               SQLite: grants (the wallet's) and the relay store's tables
                                (ledger, counters, revocations, pending approvals), mode 0600

One file for grants and usage means ``capwallet apps`` can join them without a server, and a
backup is one folder. Files are created 0600 before SQLite opens them: SQLite gives its -wal
and -shm files the same mode as the database.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "CAPWALLET_HOME"


@dataclass(frozen=True, slots=True)
class WalletHome:
    path: Path

    @classmethod
    def from_env(cls, override: str | os.PathLike[str] | None = None) -> WalletHome:
        """The home named by ``override``, else $CAPWALLET_HOME, else ~/.capwallet."""
        if override is not None:
            return cls(Path(override).expanduser())
        env = os.environ.get(ENV_HOME)
        return cls(Path(env).expanduser() if env else Path.home() / ".capwallet")

    @property
    def keystore_path(self) -> Path:
        return self.path / "keystore.json"

    @property
    def db_path(self) -> Path:
        return self.path / "wallet.db"

    @property
    def store_url(self) -> str:
        """The relay store's URL: the same SQLite file as the grants."""
        return f"sqlite:///{self.db_path}"

    def exists(self) -> bool:
        return self.keystore_path.is_file()

    def ensure(self) -> None:
        """Create the folder (0700) and an empty database file (0600) if missing."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            os.chmod(self.path, 0o700)
        create_private(self.db_path)


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; tighten its mode if it does."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)
        return
    os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
