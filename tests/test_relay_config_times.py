"""The relay's time settings are checked when the config loads (reference_relay.config,
_check_times): each a finite positive number of seconds, and no provider's lease longer than
the store's COUNTER_MARGIN (2 days), the time a counter outlives its period before it is
pruned (SQLite's sweep) or expires (Redis). A longer lease could leave a reservation open on a
counter that is gone: its settlement would then count from nothing.

Before, the relay started with any lease (seen failing so: the command line served with
upstream_timeout = 172730 and with lease_margin = 172800), and died with a traceback on
``inf`` (TOML reads it, and ``nan``: int() of either raises, here in the server's setup).

Through the command line, as an operator meets it: exit code 2, one line on stderr naming the
setting, no traceback; the bounds themselves through parse_config.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from relay_harness import EXAMPLE

from capwallet.keys import RootKey
from capwallet.store import COUNTER_MARGIN
from reference_relay.config import ConfigError, parse_config

# The example's lease: upstream_timeout + connect_timeout (10) + 1 + lease_margin (60).
LONGEST = COUNTER_MARGIN - 10 - 1 - 60  # the longest upstream_timeout the example can have


def _serve(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """Start the relay on ``text`` as its config (a root key beside it, any free port): what
    it printed and its exit code, or a failure if it started serving."""
    (tmp_path / "relay.toml").write_text(text)
    RootKey.generate().save(tmp_path / "root.key")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reference_relay", "--config", str(tmp_path / "relay.toml"),
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
        pytest.fail(f"the relay started: {out.strip()!r}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _example(setting: str, value: str) -> str:
    """The example config with one [relay] setting changed."""
    text = EXAMPLE.read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"{setting} = "))
    return text.replace(line, f"{setting} = {value}", 1)


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("upstream_timeout", str(LONGEST + 1), "provider 'openai': its lease (172801 s"),
    ("lease_margin", str(COUNTER_MARGIN), "longer than the store's counter margin (172800 s)"),
    ("upstream_timeout", "inf", "relay.upstream_timeout must be a positive number of seconds"),
    ("upstream_timeout", "nan", "relay.upstream_timeout must be a positive number of seconds"),
    ("connect_timeout", "-inf", "relay.connect_timeout must be a positive number of seconds"),
    ("sweep_interval", "0", "relay.sweep_interval must be a positive number of seconds"),
])
def test_the_command_line_refuses_a_lease_past_the_counter_margin(
        tmp_path: Path, setting: str, value: str, message: str) -> None:
    p = _serve(tmp_path, _example(setting, value))
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("relay: ") and p.stderr.strip().count("\n") == 0, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert p.stdout == ""


def test_a_provider_timeout_past_the_counter_margin_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace(
        'id = "openai"', f'id = "openai"\ntimeout = {365 * 86400}', 1)
    assert text != EXAMPLE.read_text()
    p = _serve(tmp_path, text)
    assert p.returncode == 2 and "provider 'openai': its lease (31536071 s" in p.stderr, p.stderr


def _config(**relay: Any) -> dict[str, Any]:
    return {"relay": {"root_keys": ["k"], **relay},
            "providers": [{"id": "p", "api": "openai", "base_url": "http://127.0.0.1:1/v1",
                           "models": [{"id": "m", "input": 1, "output": 2,
                                       "currency": "USD"}]}]}


def test_a_lease_of_the_counter_margin_itself_is_allowed(tmp_path: Path) -> None:
    cfg = parse_config(_config(upstream_timeout=LONGEST), tmp_path)
    assert cfg.lease_seconds(cfg.providers[0]) == COUNTER_MARGIN
    with pytest.raises(ConfigError, match=r"its lease \(172801 s"):
        parse_config(_config(upstream_timeout=LONGEST + 1), tmp_path)
    data = _config(upstream_timeout=LONGEST)
    data["providers"][0]["timeout"] = LONGEST + 1  # a provider's own timeout counts
    with pytest.raises(ConfigError, match="provider 'p': its lease"):
        parse_config(data, tmp_path)
    data["providers"][0]["timeout"] = float("nan")
    with pytest.raises(ConfigError, match="provider 'p': timeout must be a positive"):
        parse_config(data, tmp_path)
