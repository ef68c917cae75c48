"""The wallet commands as a user runs them (real subprocesses, a real CAPWALLET_HOME)."""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from capwallet.token import Token

KEY = "sk-live-abcdefghijklmnopqrstuvwxyz0123"


def run(home: Path, *args: str, stdin: str | None = None, passphrase: str | None = "pw-1",
        **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "CAPWALLET_PASSPHRASE"}
    e.update({"CAPWALLET_HOME": str(home), "CAPWALLET_KDF_LIMITS": "interactive", **env})
    if passphrase is not None:
        e["CAPWALLET_PASSPHRASE"] = passphrase
    # A new session: no controlling terminal, as in CI, even when pytest runs in one.
    return subprocess.run([sys.executable, "-m", "capwallet", *args], input=stdin, env=e,
                          capture_output=True, text=True, timeout=60, check=False,
                          start_new_session=True)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "cw"
    r = run(h, "init")
    assert r.returncode == 0, r.stderr
    return h


def test_init_creates_private_files(home: Path) -> None:
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("keystore.json", "wallet.db"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    r = run(home, "init")
    assert r.returncode == 2 and "already exists" in r.stderr


def test_wrong_passphrase_is_one_line_exit_2(home: Path) -> None:
    r = run(home, "provider", "list", passphrase="nope")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "wrong passphrase" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(home, "provider", "list", passphrase=None, stdin="")
    assert r.returncode == 2 and "CAPWALLET_PASSPHRASE" in r.stderr


def test_provider_key_from_stdin_or_env_never_printed(home: Path) -> None:
    r = run(home, "provider", "add", "openai", stdin=KEY + "\n")
    assert r.returncode == 0, r.stderr
    r = run(home, "provider", "add", "anthropic", "--key-env", "MY_KEY", MY_KEY=KEY + "x")
    assert r.returncode == 0, r.stderr
    listing = run(home, "provider", "list", "--json")
    assert {p["name"] for p in json.loads(listing.stdout)} == {"anthropic", "openai"}
    assert json.loads(listing.stdout)[0]["base_url"] == "https://api.anthropic.com"
    for out in (r, listing, run(home, "provider", "list")):
        assert KEY not in out.stdout + out.stderr
    assert KEY not in (home / "keystore.json").read_text()
    # There is no flag that takes a key on the command line.
    bad = run(home, "provider", "add", "openai", "--key", KEY)
    assert bad.returncode == 2 and KEY not in bad.stderr
    bad = run(home, "provider", "add", "openai", "--key-env", KEY)
    assert bad.returncode == 2 and KEY not in bad.stderr
    r = run(home, "provider", "add", "openai", "--key-env", "UNSET_VAR_123")
    assert r.returncode == 2 and "UNSET_VAR_123" in r.stderr
    r = run(home, "provider", "remove", "anthropic", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"name": "anthropic", "removed": True}
    assert [p["name"] for p in json.loads(run(home, "provider", "list", "--json").stdout)] == [
        "openai"]


def test_grant_apps_revoke(home: Path) -> None:
    r = run(home, "grant", "--app", "Notes\x1b[31m", "--provider", "openai", "--model",
            "gpt-4o-mini", "--budget", "3USD/month", "--expires", "7d", "--scope", "notes:read")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    t = Token.parse(token)
    assert "\x1b" not in r.stderr  # app names are sanitised for the terminal
    apps = json.loads(run(home, "apps", "--json").stdout)
    assert apps[0]["grant_id"] == t.token_id and apps[0]["budgets"][0]["limit"] == 300
    table = run(home, "apps").stdout
    assert "gpt-4o-mini" in table and "0.00 USD of 3.00 USD this month" in table
    assert "\x1b" not in table
    r = run(home, "revoke", t.token_id[:8], passphrase=None)  # no passphrase needed
    assert r.returncode == 0 and "Revoked" in r.stdout
    assert run(home, "apps", "--json").stdout.strip() == "[]"
    assert json.loads(run(home, "apps", "--all", "--json").stdout)[0]["status"] == "revoked"
    assert run(home, "revoke", "ffffffff").returncode == 2
    r = run(home, "grant", "--provider", "openai")
    assert r.returncode == 2 and "--app" in r.stderr


def test_grant_for_a_web_origin(home: Path) -> None:
    from capwallet.wallet.grants import GrantStore
    from capwallet.wallet.home import WalletHome

    r = run(home, "grant", "--app", "Notes", "--origin", "HTTP://LOCALHOST:5500/", "--provider",
            "openai", "--budget", "1USD/day", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["origin"] == "http://localhost:5500"
    assert "origin http://localhost:5500" in [c.decode() for c in
                                               Token.parse(out["token"]).raw_caveats]
    grants = GrantStore(WalletHome(home).db_path)
    try:
        assert grants.live_origins(0) == frozenset({"http://localhost:5500"})
    finally:
        grants.close()
    for bad in ("http://notes.example", "https://notes.example/app", "notes"):
        r = run(home, "grant", "--app", "Notes", "--origin", bad, "--budget", "1USD")
        assert r.returncode == 2 and "--origin" in r.stderr, bad


def test_usage_filters_and_dates(home: Path) -> None:
    assert run(home, "usage", "--json").stdout.strip() == "[]"
    assert run(home, "usage", "--since", "2026-01-01").returncode == 0
    r = run(home, "usage", "--since", "yesterday")
    assert r.returncode == 2 and "--since" in r.stderr


def test_no_wallet_yet(tmp_path: Path) -> None:
    r = run(tmp_path / "none", "apps")
    assert r.returncode == 2 and "capwallet init" in r.stderr


@pytest.mark.parametrize("args", [
    ["init"], ["provider"], ["provider", "add"], ["provider", "list"], ["provider", "remove"],
    ["grant"], ["apps"], ["usage"], ["revoke"], ["serve"], ["demo"],
])
def test_help_everywhere(tmp_path: Path, args: list[str]) -> None:
    r = run(tmp_path, *args, "--help")
    assert r.returncode == 0 and "usage: capwallet" in r.stdout


def test_demo_json(tmp_path: Path) -> None:
    r = run(tmp_path, "demo", "--json", passphrase=None)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["spend"]["spent"] > 0 and out["spend"]["limit"] == 500
    assert [c["ok"] for c in out["calls"]] == [True, True, True, True, False]
    assert out["calls"][-1]["reason"] == "model_not_allowed"
    [sub] = out["subtasks"]  # the attenuated token's call, under the grant, with its limits
    assert sub["label"] == "proofreader" and sub["calls"] == 1
    assert "models: gpt-4o-mini" in sub["limits"]
    assert any(w.endswith("of 0.05 USD in total") for w in sub["limits"])
    assert out["dashboard_url"].startswith("http://127.0.0.1:")


def test_serve_prints_a_sign_in_link_and_serves(home: Path) -> None:
    import httpx
    e = {k: v for k, v in os.environ.items()}
    e.update({"CAPWALLET_HOME": str(home), "CAPWALLET_PASSPHRASE": "pw-1"})
    run(home, "provider", "add", "openai", stdin=KEY + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "capwallet", "serve", "--port", "0"],
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        login = lines[1].split()[-1]
        assert login.startswith("http://127.0.0.1:") and "/login#" in login
        base, secret = login.split("/login#")
        assert httpx.get(f"{base}/healthz").status_code == 200
        locked = httpx.get(f"{base}/", headers={"x-capwallet-session": "-"})
        assert locked.status_code == 401  # locked without the link
        with httpx.Client(base_url=base) as browser:
            r = browser.post("/login", json={"secret": secret}, headers={"origin": base})
            assert r.status_code == 200
            browser.headers["x-capwallet-session"] = r.json()["session"]
            assert browser.get("/").status_code == 200
        r = httpx.post(f"{base}/v1/chat/completions", json={"model": "gpt-4o-mini"},
                       headers={"authorization": "Bearer cwt1_nope"})
        assert r.status_code in (400, 401) and r.headers["x-capwallet-reason"] == "malformed"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "capwallet stopped." in err, err
    assert KEY not in out + err + "".join(lines)
    wrong = run(home, "serve", passphrase="wrong")
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr


def test_piped_key_with_the_passphrase_typed_at_the_terminal(home: Path) -> None:
    """`echo $KEY | capwallet provider add openai` at a terminal: the key comes from the pipe,
    the passphrase is asked on the terminal (it failed with "no passphrase" before)."""
    import pty

    master, slave = pty.openpty()
    slave_name = os.ttyname(slave)
    os.close(slave)

    def own_terminal() -> None:
        os.setsid()
        fd = os.open(slave_name, os.O_RDWR)  # the session's controlling terminal, like a shell's
        os.dup2(fd, 2)

    e = {k: v for k, v in os.environ.items() if k != "CAPWALLET_PASSPHRASE"}
    e.update({"CAPWALLET_HOME": str(home), "CAPWALLET_KDF_LIMITS": "interactive"})
    proc = subprocess.Popen([sys.executable, "-m", "capwallet", "provider", "add", "openai"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=e,
                            preexec_fn=own_terminal)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(KEY.encode() + b"\n")
        proc.stdin.close()
        seen = b""
        deadline = time.monotonic() + 30
        while b"passphrase" not in seen.lower():
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                seen += os.read(master, 1024)
        os.write(master, b"pw-1\n")
        assert proc.wait(30) == 0
        out = proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert "Saved the openai key" in out
    assert KEY.encode() not in seen and KEY not in out
    r = run(home, "provider", "list", "--json")
    assert [p["name"] for p in json.loads(r.stdout)] == ["openai"]


def test_apps_shows_a_token_quota_not_no_budget(home: Path) -> None:
    r = run(home, "grant", "--app", "Quota Bot", "--token-quota", "2000000/day", "--rate", "30")
    assert r.returncode == 0, r.stderr
    out = run(home, "apps").stdout
    assert "no budget" not in out and "no limit" not in out
    assert "at most 2,000,000 model tokens per day" in out
    assert "at most 30 requests per minute" in out


def test_serve_json_is_one_line_a_script_can_read(home: Path) -> None:
    """`capwallet serve --json` prints the addresses as one JSON line (the keys of `demo
    --json`), and they work: the sign-in link signs in, the relay answers."""
    import httpx
    e = {k: v for k, v in os.environ.items()}
    e.update({"CAPWALLET_HOME": str(home), "CAPWALLET_PASSPHRASE": "pw-1"})
    run(home, "provider", "add", "openai", stdin=KEY + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "capwallet", "serve", "--port", "0",
                             "--json"], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        base = info["wallet_url"]
        assert base.startswith("http://127.0.0.1:") and info["listening_on"] == base
        assert info["relay_url"] == f"{base}/v1"
        login, secret = info["dashboard_url"].split("/login#")
        assert login == base and secret
        with httpx.Client(base_url=base) as browser:
            r = browser.post("/login", json={"secret": secret}, headers={"origin": base})
            assert r.status_code == 200, r.text
        r = httpx.get(f"{info['relay_url']}/models", headers={"authorization": "Bearer cwt1_x"})
        assert r.headers["x-capwallet-reason"] == "malformed"
    finally:
        proc.terminate()  # SIGTERM, as systemd stops it: the wallet closes and says so
        out, err = proc.communicate(timeout=20)
    assert out == "" and KEY not in err  # nothing but the one line on stdout
    assert proc.returncode == 0 and err.strip().endswith("capwallet stopped."), err


def test_demo_without_the_openai_sdk_says_how_to_get_it(tmp_path: Path) -> None:
    """`pipx install .` leaves out the test extras, openai among them; `capwallet demo` then
    failed halfway with a ModuleNotFoundError traceback. It now says, before starting
    anything, which extra to install (openai is made unimportable here as Python documents:
    None in sys.modules)."""
    code = ("import sys; sys.modules['openai'] = None; from capwallet.cli import main; "
            "sys.exit(main(['demo']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=False, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert "pipx install '.[demo]'" in r.stderr
    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(d.startswith("openai") for d in extras["demo"])
    assert "pipx install '.[demo]'" in (root / "README.md").read_text()


def test_demo_keep_running_sends_the_reader_only_where_it_can_go(tmp_path: Path) -> None:
    """The last line of `capwallet demo --keep-running` mentions the web app only when the
    demo offers one (it is not offered before `npm ci`)."""
    proc = subprocess.Popen([sys.executable, "-m", "capwallet", "demo", "--keep-running",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HOME": str(tmp_path)})
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while not (lines and lines[-1].startswith("The wallet keeps running")):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    offered = not any(line.startswith("Web app: not offered") for line in lines)
    assert ("then the web app" in lines[-1]) == offered, lines[-2:]
