"""The relay's configuration: root keys, store, providers, prices, exchange rates, limits.

Read from TOML (see relay.example.toml, which documents every setting). Relative paths (key
files, a relative ``sqlite:///`` store) are resolved against the config file's directory, so a
config works wherever the relay is started from. Everything is checked at load time: a relay
that starts has a usable configuration.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capwallet.provider_url import BaseUrlError, check_base_url
from capwallet.store.base import COUNTER_MARGIN
from reference_relay.prices import (
    PRICE_FIELDS,
    Converter,
    Price,
    PriceError,
    PriceTable,
    Rate,
    default_table,
    parse_rate,
    parse_table,
    price_from_table,
)

FLAVORS = ("openai", "anthropic")
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    id: str
    price: Price


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One upstream: how to call it and what it serves at which price.

    ``base_url`` is what that provider's own SDK uses: for OpenAI-flavor APIs it ends in /v1
    (``https://api.openai.com/v1``), for Anthropic it does not (``https://api.anthropic.com``).
    """

    id: str
    api: str  # "openai" | "anthropic"
    base_url: str
    api_key_env: str | None
    models: dict[str, ModelConfig]
    zero_retention: bool = False
    max_tokens_field: str = "max_tokens"  # the output cap the provider honours (sent alone)
    timeout: float | None = None  # overrides the relay's upstream_timeout
    # Whether this OpenAI-flavor provider offers the Responses API (/v1/responses); Gemini,
    # DeepSeek and most local servers do not, and a call for them is refused up front.
    responses_api: bool = True


@dataclass(frozen=True, slots=True)
class RelayConfig:
    root_keys: tuple[Path, ...]
    store_url: str
    providers: tuple[ProviderConfig, ...]
    rates: dict[tuple[str, str], Rate] = field(default_factory=dict)
    rates_date: str = ""
    prices_date: str = ""
    wallet_url: str | None = None
    log_bodies: bool = False  # prompts/answers are kept only if this AND the token allow it
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout: float = 30.0  # seconds for the whole request body to arrive (else 408)
    header_timeout: float = 10.0  # seconds for a request head to arrive (else 408 and close)
    max_log_body_bytes: int = 256 * 1024
    upstream_timeout: float = 600.0  # seconds for one whole upstream call, streams included
    connect_timeout: float = 10.0
    lease_margin: int = 60  # lease = upstream timeout + this, so a live relay settles first
    sweep_interval: float = 30.0  # how often expired leases are closed
    approval_ttl: int = 600  # how long a pending approval request stays open
    # Ledger rows (each call, refusals compacted per token, reason and minute) are deleted
    # after this many days; 0 keeps them forever. Spend totals live in the store's usage
    # aggregates and budgets in its counters, which pruning never touches.
    ledger_retention_days: int = 90
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    allowed_origins: tuple[str, ...] = ()  # browser origins that may call the relay (CORS)
    host: str = "127.0.0.1"
    port: int = 8787
    max_connections: int = 256  # upstream connection pool

    @property
    def converter(self) -> Converter:
        return Converter(self.rates)

    def provider(self, provider_id: str) -> ProviderConfig | None:
        for p in self.providers:
            if p.id == provider_id:
                return p
        return None

    def lease_seconds(self, provider: ProviderConfig) -> int:
        timeout = provider.timeout if provider.timeout is not None else self.upstream_timeout
        return int(timeout + self.connect_timeout) + 1 + self.lease_margin

    def default_provider_keys(self, provider_id: str) -> str:
        """The provider's API key from the environment variable the config names ("" if none).

        Read on every call, so a rotated key is picked up without a restart.
        """
        p = self.provider(provider_id)
        if p is None or p.api_key_env is None:
            return ""
        return os.environ.get(p.api_key_env, "")


def env_keys(config: RelayConfig) -> Callable[[str], str]:
    """``config.default_provider_keys`` with the same results, read more cheaply: the relay
    asks for a key on every call, and ``os.environ.get`` is four Python calls (Mapping.get,
    _Environ.__getitem__, its key encoding and value decoding).

    Still read on every call: each call looks the variable up in the mapping os.environ keeps
    its values in (``os.environ._data``, the one that ``os.environ[...] = ...`` and ``del``
    change), and decodes a value only when it is not the one decoded last. Where os.environ
    has no such mapping, the config's own method is used."""
    data = getattr(os.environ, "_data", None)
    encode = getattr(os.environ, "encodekey", None)
    decode = getattr(os.environ, "decodevalue", None)
    if not isinstance(data, dict) or encode is None or decode is None:
        return config.default_provider_keys
    names: dict[str, Any] = {}
    for p in config.providers:  # the first provider of an id, as config.provider finds it
        if p.id not in names:
            names[p.id] = None if p.api_key_env is None else encode(p.api_key_env)
    last: dict[str, tuple[Any, str]] = {}  # provider id -> (raw value, its decoding)

    def read(provider_id: str) -> str:
        name = names.get(provider_id)
        if name is None:
            return ""
        raw = data.get(name)
        if raw is None:
            return ""
        seen = last.get(provider_id)
        if seen is not None and seen[0] is raw:
            return seen[1]
        value: str = decode(raw)
        last[provider_id] = (raw, value)
        return value

    return read


def _get(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = None) -> Any:
    v = table.get(key, default)
    if v is None:
        return None
    if not isinstance(v, kind) or (isinstance(v, bool) and kind in (int, float, (int, float))):
        raise ConfigError(f"{where}.{key} has the wrong type")
    return v


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def _store_url(base: Path, url: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///"):]
        path, sep, query = rest.partition("?")
        return f"sqlite:///{_resolve(base, path)}{sep}{query}"
    return url


def _provider(raw: Mapping[str, Any], table: PriceTable, i: int) -> ProviderConfig:
    where = f"providers[{i}]"
    pid = _get(raw, "id", str, where)
    if not pid:
        raise ConfigError(f"{where} needs an id")
    where = f"provider {pid!r}"
    known = {"id", "api", "base_url", "api_key_env", "models", "zero_retention",
             "max_tokens_field", "timeout", "price_table", "responses_api"}
    extra = set(raw) - known
    if extra:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(extra))}")
    api = _get(raw, "api", str, where, "openai")
    if api not in FLAVORS:
        raise ConfigError(f"{where}: api must be one of {', '.join(FLAVORS)}")
    try:  # the same rule as `capwallet provider add --base-url`
        base_url = check_base_url(_get(raw, "base_url", str, where))
    except BaseUrlError as exc:
        raise ConfigError(f"{where}: base_url: {exc}") from None
    field_name = _get(raw, "max_tokens_field", str, where, "max_tokens")
    if field_name not in MAX_TOKENS_FIELDS:
        raise ConfigError(f"{where}: max_tokens_field must be one of {MAX_TOKENS_FIELDS}")
    section_name = _get(raw, "price_table", str, where, pid)
    section = table.sections.get(section_name, {})
    models: dict[str, ModelConfig] = {}
    for j, m in enumerate(_get(raw, "models", list, where, [])):
        if isinstance(m, str):
            price = section.get(m)
            if price is None:
                raise ConfigError(
                    f"{where}: model {m!r} has no price in the table section {section_name!r}; "
                    "give its prices inline: { id = ..., input = ..., output = ..., currency = ..."
                    " }"
                )
            models[m] = ModelConfig(m, price)
        elif isinstance(m, dict):
            mid = m.get("id")
            if not isinstance(mid, str) or not mid:
                raise ConfigError(f"{where}.models[{j}] needs an id")
            base = section.get(mid)
            entry = dict(m)
            if base is not None:  # inline fields override the table's
                merged = {k: getattr(base, k) for k in PRICE_FIELDS}
                merged.update(entry)
                entry = {k: v for k, v in merged.items() if v is not None}
            entry.pop("id")
            currency = entry.pop("currency", None)
            if not isinstance(currency, str):
                raise ConfigError(f"{where}: model {mid!r} needs a currency")
            scale = entry.pop("scale", table.scale)
            try:
                models[mid] = ModelConfig(
                    mid, price_from_table(entry, currency, scale, f"{where} model {mid!r}"))
            except PriceError as exc:
                raise ConfigError(str(exc)) from None
        else:
            raise ConfigError(f"{where}.models[{j}] must be a model id or a table")
    if not models:
        raise ConfigError(f"{where} serves no models")
    timeout = _get(raw, "timeout", (int, float), where)
    return ProviderConfig(
        id=pid, api=api, base_url=base_url.rstrip("/"),
        api_key_env=_get(raw, "api_key_env", str, where), models=models,
        zero_retention=bool(_get(raw, "zero_retention", bool, where, False)),
        max_tokens_field=field_name, timeout=None if timeout is None else float(timeout),
        responses_api=bool(_get(raw, "responses_api", bool, where, True)),
    )


def parse_config(data: Mapping[str, Any], base_dir: Path) -> RelayConfig:
    """Build a RelayConfig from parsed TOML; relative paths are relative to ``base_dir``."""
    known = {"relay", "rates", "providers", "prices"}
    extra = set(data) - known
    if extra:
        raise ConfigError(f"unknown top-level section(s): {', '.join(sorted(extra))}")
    relay = data.get("relay", {})
    if not isinstance(relay, dict):
        raise ConfigError("[relay] must be a table")
    w = "relay"
    table = default_table()
    prices = data.get("prices")
    try:
        if isinstance(prices, str):  # a whole replacement table file
            table = parse_table(tomllib.loads(_resolve(base_dir, prices).read_text("utf-8")),
                                prices)
        elif isinstance(prices, dict):  # extra/overriding sections, same layout as prices.toml
            extra_table = parse_table({"scale": table_scale(prices), **prices}, "[prices]")
            merged = {k: dict(v) for k, v in table.sections.items()}
            for name, models in extra_table.sections.items():
                merged.setdefault(name, {}).update(models)
            table = PriceTable(table.date, table.note, merged, table.scale)
        elif prices is not None:
            raise ConfigError("prices must be a file name or a table")
    except (PriceError, OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"price table: {exc}") from None

    keys = _get(relay, "root_keys", list, w, [])
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ConfigError("relay.root_keys must list at least one root key file")
    store = _get(relay, "store", str, w, "sqlite:///relay.db")
    rates_raw = data.get("rates", {})
    if not isinstance(rates_raw, dict):
        raise ConfigError("[rates] must be a table")
    rates: dict[tuple[str, str], Rate] = {}
    rates_date = ""
    for pair, value in rates_raw.items():
        if pair == "date":
            rates_date = str(value)
            continue
        try:
            r = parse_rate(pair, value)
        except PriceError as exc:
            raise ConfigError(str(exc)) from None
        rates[(r.base, r.quote)] = r
    providers_raw = data.get("providers", [])
    if not isinstance(providers_raw, list) or not providers_raw:
        raise ConfigError("the config needs at least one [[providers]] entry")
    providers = tuple(_provider(p, table, i) for i, p in enumerate(providers_raw))
    ids = [p.id for p in providers]
    if len(set(ids)) != len(ids):
        raise ConfigError("provider ids must be unique")
    hosts = _get(relay, "allowed_hosts", list, w, ["127.0.0.1", "localhost", "::1"])
    origins = _get(relay, "allowed_origins", list, w, [])
    wallet_url = _get(relay, "wallet_url", str, w)
    cfg = RelayConfig(
        root_keys=tuple(_resolve(base_dir, k) for k in keys),
        store_url=_store_url(base_dir, store),
        providers=providers,
        rates=rates,
        rates_date=rates_date,
        prices_date=table.date,
        wallet_url=wallet_url.rstrip("/") if wallet_url else None,
        log_bodies=bool(_get(relay, "log_bodies", bool, w, False)),
        max_body_bytes=int(_get(relay, "max_body_bytes", int, w, 4 * 1024 * 1024)),
        body_timeout=float(_get(relay, "body_timeout", (int, float), w, 30.0)),
        header_timeout=float(_get(relay, "header_timeout", (int, float), w, 10.0)),
        max_log_body_bytes=int(_get(relay, "max_log_body_bytes", int, w, 256 * 1024)),
        upstream_timeout=float(_get(relay, "upstream_timeout", (int, float), w, 600.0)),
        connect_timeout=float(_get(relay, "connect_timeout", (int, float), w, 10.0)),
        lease_margin=int(_get(relay, "lease_margin", int, w, 60)),
        sweep_interval=float(_get(relay, "sweep_interval", (int, float), w, 30.0)),
        approval_ttl=int(_get(relay, "approval_ttl", int, w, 600)),
        ledger_retention_days=_retention(_get(relay, "ledger_retention_days", int, w, 90)),
        allowed_hosts=tuple(str(h) for h in hosts),
        allowed_origins=tuple(str(o) for o in origins),
        host=_get(relay, "host", str, w, "127.0.0.1"),
        port=int(_get(relay, "port", int, w, 8787)),
        max_connections=int(_get(relay, "max_connections", int, w, 256)),
    )
    if (cfg.max_body_bytes < 1024 or cfg.upstream_timeout <= 0 or cfg.lease_margin < 0
            or cfg.body_timeout <= 0 or cfg.header_timeout <= 0):
        raise ConfigError("relay limits must be positive (max_body_bytes >= 1024)")
    _check_times(cfg)
    return cfg


# The seconds settings of [relay], each a finite positive number.
_SECONDS = ("body_timeout", "header_timeout", "upstream_timeout", "connect_timeout",
            "sweep_interval")


def _check_times(cfg: RelayConfig) -> None:
    """Every time setting a finite positive number of seconds (TOML reads ``inf`` and
    ``nan``: a lease of either cannot be computed, and nan passes every comparison), and
    every provider's lease (RelayConfig.lease_seconds) at most the store's COUNTER_MARGIN.
    A counter is pruned, or expires in Redis, COUNTER_MARGIN after its period ends, and the
    relay's sweep closes the expired leases first: so no open reservation holds a pruned
    counter only while no lease is longer than the margin (a longer one could settle into a
    counter that is gone, or outlive its chain's record). Refused at load time, with the
    provider and the figures."""
    for name in _SECONDS:
        if not 0 < getattr(cfg, name) < math.inf:
            raise ConfigError(f"relay.{name} must be a positive number of seconds")
    for p in cfg.providers:
        if p.timeout is not None and not 0 < p.timeout < math.inf:
            raise ConfigError(f"provider {p.id!r}: timeout must be a positive number of seconds")
        lease = cfg.lease_seconds(p)
        if lease > COUNTER_MARGIN:
            raise ConfigError(
                f"provider {p.id!r}: its lease ({lease} s: the upstream timeout, "
                f"relay.connect_timeout, 1 s and relay.lease_margin) is longer than the "
                f"store's counter margin ({COUNTER_MARGIN} s), which a counter outlives its "
                f"period by: a counter could be pruned while a reservation still holds it; "
                f"lower the timeout or relay.lease_margin")


def table_scale(prices: Mapping[str, Any]) -> int:
    scale = prices.get("scale", 1)
    if not isinstance(scale, int) or scale < 1:
        raise ConfigError("prices.scale must be a positive integer")
    return scale


def _retention(days: int) -> int:
    if isinstance(days, bool) or days < 0:
        raise ConfigError("relay.ledger_retention_days must be 0 (keep forever) or more")
    return days


def load_config(path: str | Path) -> RelayConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {p} is not valid TOML: {exc}") from None
    return parse_config(data, p.resolve().parent)
