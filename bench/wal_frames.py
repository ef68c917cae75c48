"""Which pages the relay's SQLite commits write: WAL frames per commit, by table and index.

    python bench/wal_frames.py [--calls N] [--concurrency C]

Not a benchmark (bench/relay.py measures; this explains). Every page a commit changes is one
WAL frame, written with two pwrite calls (its 24-byte header, then the page), checksummed, and
synced to disk at the next checkpoint: the relay's file I/O per call is its commits per call
times its frames per commit (issue 17: about 4 pwrites per call at concurrency 20, the bulk of
the system time the relay spends beyond the floor proxy). This shows where a commit's frames
go, so a change of the schema or of the batching can be judged by the frames it saves.

One run on loopback, as bench/relay_profile.py: the fake provider and a one-process relay
(``python -m reference_relay``), warmed up, then ``--calls`` plain chat calls at
``--concurrency``. Meanwhile the relay's database and WAL are copied every 40 ms. Each
copy's WAL holds the frames of the commits since the last checkpoint (the store checkpoints
every CHECKPOINT_EVERY commits and the WAL then starts over); of each WAL generation the
copy with the most commits is read. A frame's page is named by its table or index: the
database file's pages by the dbstat virtual table, and a page a commit took off the free list
by the interior page that the same commit made point at it. Page 1 is the file header
(written when the free list or the file's size changes); an all-zero frame is a page freed
under secure_delete (Debian's SQLite zeroes freed pages).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sqlite3
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import checkout
from loadgen import KEY, load, start
from relay_profile import BODY, _relay_dir

from capwallet import caveats as cav
from capwallet.keys import RootKey
from capwallet.token import mint

_WAL_HEADER = 32
_FRAME_HEADER = 24

Commit = list[tuple[int, bytes]]  # (page number, page content) per frame


def _commits(wal: bytes) -> tuple[tuple[int, int], list[Commit]]:
    """The WAL generation's salts and its complete commits (a frame whose header holds the
    database size ends a commit; frames of an older generation carry other salts)."""
    if len(wal) < _WAL_HEADER:
        return (0, 0), []
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts = struct.unpack(">II", wal[16:24])
    commits: list[Commit] = []
    frames: Commit = []
    off = _WAL_HEADER
    while off + _FRAME_HEADER + page_size <= len(wal):
        pgno, db_size, s1, s2 = struct.unpack(">IIII", wal[off:off + 16])
        if (s1, s2) != salts:
            break
        frames.append((pgno, wal[off + _FRAME_HEADER:off + _FRAME_HEADER + page_size]))
        if db_size:
            commits.append(frames)
            frames = []
        off += _FRAME_HEADER + page_size
    return salts, commits


def _owners(db: Path) -> tuple[dict[int, str], dict[int, str]]:
    """Each b-tree page's table or index in ``db`` alone (its WAL left aside: the database
    file as of the WAL generation's start), and the b-trees' root pages."""
    alone = db.parent / "alone" / db.name
    alone.parent.mkdir()
    shutil.copyfile(db, alone)
    conn = sqlite3.connect(f"file:{alone}?mode=ro", uri=True)
    try:
        pages = {pageno: name for name, pageno in conn.execute("SELECT name, pageno FROM dbstat")}
        roots = {int(root): str(name) for name, root in
                 conn.execute("SELECT name, rootpage FROM sqlite_schema WHERE rootpage > 0")}
    finally:
        conn.close()
    return pages, roots


def _children(data: bytes) -> list[int]:
    """The child page numbers of an interior b-tree page (empty for any other page)."""
    if data[0] not in (2, 5):
        return []
    n_cells = struct.unpack(">H", data[3:5])[0]
    found = [struct.unpack(">I", data[8:12])[0]]  # the right-most child
    for i in range(n_cells):
        cell = struct.unpack(">H", data[12 + 2 * i:14 + 2 * i])[0]
        found.append(struct.unpack(">I", data[cell:cell + 4])[0])
    return found


def _named(commit: Commit, owner: dict[int, str], roots: dict[int, str]) -> list[str]:
    """Name each frame of ``commit`` by its page's table or index, following the commit's
    interior pages down to the pages they point at: a page the commit took off the free list
    is linked from its new parent in the same commit, so its owner is the parent's."""
    owner.update(roots)
    interior = [(pgno, data) for pgno, data in commit if data[0] in (2, 5)]
    for _ in range(4):  # one pass per b-tree level the commit changed
        for pgno, data in interior:
            if pgno in owner:
                for child in _children(data):
                    owner[child] = owner[pgno]
    names = []
    for pgno, data in commit:
        if pgno == 1:
            names.append("page 1 (file header)")
        elif not any(data):
            names.append("freed page (zeroed)")
            owner.pop(pgno, None)
        elif data[0] in (2, 5, 10, 13):
            kind = "interior" if data[0] in (2, 5) else "leaf"
            names.append(f"{owner.get(pgno, '?')} {kind}")
        else:
            names.append("free-list trunk or overflow page")
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=4000, help="calls in the measured load (4000)")
    ap.add_argument("--concurrency", type=int, default=20, help="concurrent callers (20)")
    args = ap.parse_args()
    print(f"code measured: {checkout.describe()}")
    tmp = Path(tempfile.mkdtemp(prefix="capwallet-wal-"))
    fake, fake_url = start([sys.executable, "-m", "fake_provider", "--port", "0",
                            "--api-key", KEY], "listening")
    root = RootKey.generate()
    d = _relay_dir(tmp, fake_url, root)
    env = checkout.env(OPENAI_API_KEY=KEY, ANTHROPIC_API_KEY=KEY)
    relay, relay_url = start([sys.executable, "-m", "reference_relay", "--config",
                              str(d / "relay.toml"), "--port", "0", "--log-level", "warning"],
                             "listening", env=env, cwd=d)
    token = mint(root, [cav.Budget(10**9, "USD", "month"), cav.TokenQuota(10**12, "month"),
                        cav.App("bench")]).serialize()
    copies: list[Path] = []
    done = threading.Event()

    def copier() -> None:
        while not done.wait(0.04):
            dest = tmp / f"copy{len(copies)}"
            dest.mkdir()
            try:  # the WAL first: the database it belongs to is at least as new
                wal = (d / "relay.db-wal").read_bytes()
                (dest / "relay.db").write_bytes((d / "relay.db").read_bytes())
            except FileNotFoundError:
                continue
            (dest / "relay.db-wal").write_bytes(wal)
            copies.append(dest)

    try:
        asyncio.run(load(relay_url, "/v1/chat/completions", BODY, token, args.concurrency,
                         1000, 0))
        thread = threading.Thread(target=copier)
        thread.start()
        started = time.perf_counter()
        result = asyncio.run(load(relay_url, "/v1/chat/completions", BODY, token,
                                  args.concurrency, args.calls, 0))
        elapsed = time.perf_counter() - started
        done.set()
        thread.join()
    finally:
        for proc in (relay, fake):
            proc.terminate()
            proc.wait()
    print(f"{len(result.latencies)} calls at concurrency {args.concurrency} in {elapsed:.1f} s, "
          f"errors {result.errors}")
    # Per WAL generation: the database file of its first copy (the file a generation's
    # commits start from: only the checkpoint at its end writes to it) and its longest WAL.
    first: dict[tuple[int, int], Path] = {}
    longest: dict[tuple[int, int], tuple[int, Path]] = {}
    for copy in copies:
        salts, commits = _commits((copy / "relay.db-wal").read_bytes())
        if not commits:
            continue
        first.setdefault(salts, copy)
        if len(commits) > longest.get(salts, (0, copy))[0]:
            longest[salts] = (len(commits), copy)
    pages: collections.Counter[str] = collections.Counter()
    n_commits = n_frames = 0
    for salts, (_, copy) in longest.items():
        if first[salts] is copy and len(longest) > 1:
            continue  # one copy only: its database file may hold the checkpoint's writes
        owner, roots = _owners(first[salts] / "relay.db")
        for commit in _commits((copy / "relay.db-wal").read_bytes())[1]:
            n_commits += 1
            n_frames += len(commit)
            pages.update(_named(commit, owner, roots))
    shutil.rmtree(tmp, ignore_errors=True)
    if not n_commits:
        print("no complete WAL generation was copied (try more --calls)")
        return 1
    print(f"{n_commits} commits read from {len(longest)} WAL generations: "
          f"{n_frames / n_commits:.2f} frames per commit ({2 * n_frames / n_commits:.1f} pwrite "
          "calls), by page:")
    for name, count in pages.most_common():
        print(f"  {count / n_commits:5.2f}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
