"""Issue 13 F4: a provider key goes over plain http only to this machine.

The three URLs from the review were accepted by a string-prefix check and made the relay send
the provider key in cleartext to a remote host. The URL is now parsed, by one function that
both ``capwallet provider add --base-url`` and the relay's config loader use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from relay_harness import config_data

from capwallet.provider_url import BaseUrlError, check_base_url
from reference_relay.config import ConfigError, parse_config

HOSTILE = ["http://127.0.0.1@gateway.example.net/v1", "http://localhost.example.net/v1",
           "http://127.0.0.1.nip.io:8080/v1"]
ALSO_REFUSED = [
    "https://user:pw@api.example.com/v1",  # userinfo, even over https
    "http://user@127.0.0.1:8080/v1",
    "http://127.0.0.1\\@gateway.example.net/v1",
    "http://localhost./v1", "http://127.1/v1", "http://0x7f.0.0.1/v1",
    "http://[::ffff:10.0.0.1]/v1", "http://10.0.0.1/v1", "http://example.com/v1",
    "ftp://127.0.0.1/v1", "127.0.0.1:8080/v1", "https:///v1", "https://api.openai.com/v1?x=1",
    "https://api.openai.com/v1#f", "http://127.0.0.1:99999/v1", "http://127.0.0.1:0/v1",
    "https://api.openai .com/v1", "https://%61pi.openai.com/v1",
]
ALLOWED = ["https://api.openai.com/v1", "https://api.anthropic.com",
           "http://127.0.0.1:11434/v1", "http://127.8.9.10/v1", "http://localhost:8080/v1",
           "http://LOCALHOST:8080/v1", "http://[::1]:8080/v1", "https://10.0.0.1:8443/v1",
           "https://gateway.example.net/v1/"]


@pytest.mark.parametrize("url", HOSTILE + ALSO_REFUSED)
def test_refused(url: str) -> None:
    with pytest.raises(BaseUrlError):
        check_base_url(url)


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed(url: str) -> None:
    assert check_base_url(url) == url.rstrip("/")


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAPWALLET_HOME": str(home), "CAPWALLET_PASSPHRASE": "pw-1",
           "CAPWALLET_KDF_LIMITS": "interactive"}
    return subprocess.run([sys.executable, "-m", "capwallet", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_provider_add_refuses_the_hostile_urls(tmp_path: Path) -> None:
    home = tmp_path / "cw"
    assert cli(home, "init").returncode == 0
    for i, url in enumerate(HOSTILE):
        r = cli(home, "provider", "add", f"p{i}", "--base-url", url, stdin="sk-test-1\n")
        assert r.returncode == 2, (url, r.stdout, r.stderr)
        assert r.stderr.startswith("capwallet: --base-url: ") and "Traceback" not in r.stderr
    r = cli(home, "provider", "add", "local", "--base-url", "http://127.0.0.1:11434/v1",
            stdin="sk-test-1\n")
    assert r.returncode == 0, r.stderr
    listed = cli(home, "provider", "list", "--json")
    assert [p["name"] for p in json.loads(listed.stdout)] == ["local"]


@pytest.mark.parametrize("url", HOSTILE)
def test_relay_config_refuses_the_hostile_urls(url: str, tmp_path: Path) -> None:
    data = config_data("http://127.0.0.1:9")
    parse_config(data, tmp_path)  # the harness's own loopback config loads
    data["providers"][0]["base_url"] = url
    with pytest.raises(ConfigError, match=r"plain http is allowed only|user name"):
        parse_config(data, tmp_path)
