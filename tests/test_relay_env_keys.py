"""reference_relay.config.env_keys: the relay's default provider keys, read from the
environment on every call (a key set, changed or removed in the running process is what the
next call gets), with the results of RelayConfig.default_provider_keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reference_relay.config import env_keys, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "reference_relay" / "relay.example.toml"


def test_env_keys_reads_what_the_config_method_reads_on_every_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(EXAMPLE)
    read = env_keys(cfg)
    assert read is not cfg.default_provider_keys  # the fast reader, on CPython
    ids = [p.id for p in cfg.providers] + ["no-such-provider"]
    names = {p.api_key_env for p in cfg.providers if p.api_key_env}
    for name in names:
        monkeypatch.delenv(name, raising=False)

    def same() -> None:
        assert [read(i) for i in ids] == [cfg.default_provider_keys(i) for i in ids]

    same()
    assert read("openai") == ""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-first")
    same()
    assert read("openai") == "sk-first" and read("openai") == "sk-first"
    os.environ["OPENAI_API_KEY"] = "sk-rotated-\u00e9"  # changed in the running process
    same()
    assert read("openai") == "sk-rotated-\u00e9"
    del os.environ["OPENAI_API_KEY"]
    same()
    assert read("openai") == ""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
    same()
    assert read("anthropic") == "sk-ant" and read("openai") == ""
