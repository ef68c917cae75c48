"""negative.json: caveat grammar. Every token is correctly signed; only the caveat text is bad."""

from __future__ import annotations

from typing import Any

from .encoder import tok
from .files import File, crosscheck_mint, keys_json, token_json
from .flags import (
    AMOUNT,
    ARGS,
    BADVALUE,
    BOUNDARY,
    CONTROL,
    NONASCII,
    NONCANON_INT,
    ORDER,
    PCT,
    SPACE,
    UNKNOWN_TYPE,
    UNSORTED,
    VALID,
)
from .requests import allow, call, ctx, debit, deny
from .seeds import K1, MAX_MINOR, MAX_SAFE, tid, utc


def build_negative() -> File:
    f = File("negative", [
        "Caveat grammar (spec/caveats.md#grammar): every token here is correctly signed under",
        "K1, so the signature never decides; the caveat bytes do. A name that is not in the",
        "registry is unknown_caveat; a registered name whose arguments are not the one",
        "canonical spelling is invalid_caveat. A few valid controls are included.",
    ])
    keys = keys_json(K1)
    n = 0

    def add(desc: str, spec: str, flags: list[str], caveats: list[bytes],
            expected: dict[str, Any], request: dict[str, Any] | None = None) -> None:
        nonlocal n
        n += 1
        t = tok(f"negative-{n}", *caveats)
        if expected["result"] == "allow":
            crosscheck_mint(t)
        f.add(desc, spec, flags, keys=keys, **token_json(t), context=ctx(request),
              expected=expected)

    dec, gr, ints = "caveats.md#decoding-a-caveat", "caveats.md#grammar", "caveats.md#integers"
    pct, lists = "caveats.md#percent-encoding", "caveats.md#name-lists"
    unk, inv = deny("unknown_caveat"), deny("invalid_caveat")
    add("An unknown caveat type.", dec, [UNKNOWN_TYPE], [b"frobnicate 1"], unk)
    add("A conventional macaroon caveat ('time < ...'), not in the registry.", dec,
        [UNKNOWN_TYPE], [b"time < 2030-01-01T00:00Z"], unk)
    add("A registered name in upper case: names are exact.", dec, [UNKNOWN_TYPE],
        [b"Expires 1790003600"], unk)
    add("An empty caveat: its name is empty.", dec, [UNKNOWN_TYPE], [b""], unk)
    add("A tab instead of a space: the name runs to the first space, so it is "
        "'expires\\t1790003600'.", dec, [UNKNOWN_TYPE], [b"expires\t1790003600"], unk)
    add("A leading space: the name is empty.", dec, [UNKNOWN_TYPE, SPACE], [b" models a"], unk)
    add("An invalid caveat before an unknown one: unknown_caveat, since every caveat's type is "
        "checked before any caveat's arguments.", dec, [UNKNOWN_TYPE, ORDER],
        [b"expires 01", b"frobnicate 1"], unk)
    add("An unknown caveat before an invalid one.", dec, [UNKNOWN_TYPE, ORDER],
        [b"frobnicate 1", b"expires 01"], unk)
    for text, why in [(b"expires 01", "a leading zero"), (b"expires 00", "two zeros"),
                      (b"expires -1", "a sign"), (b"expires +1", "a plus sign"),
                      (b"expires 1.0", "a decimal point"), (b"expires 1e9", "an exponent"),
                      (b"expires 0x10", "hex"), (b"max-output-tokens 0100", "a leading zero"),
                      (b"expires 9007199254740992", "2^53, one past the largest allowed"),
                      (b"expires 10000000000000000", "17 digits")]:
        add(f"An integer with {why}: '{text.decode()}'.", ints, [NONCANON_INT], [text], inv)
    add("expires with no argument.", gr, [ARGS], [b"expires"], inv)
    add("expires with two arguments.", gr, [ARGS], [b"expires 1 2"], inv)
    add("not-before with no argument.", gr, [ARGS], [b"not-before"], inv)
    add("models not sorted.", lists, [UNSORTED], [b"models b a"], inv)
    add("models with a duplicate.", lists, [UNSORTED], [b"models a a"], inv)
    add("models 'a' and 'B': byte order puts 'B' (0x42) first.", lists, [UNSORTED],
        [b"models a B"], inv)
    add("Control: 'models B a' is in byte order.", lists, [CONTROL, VALID], [b"models B a"],
        allow(), call(model="a"))
    add("models 'a{' (encoded a%7B) before 'a-': sorted as encoded text but not by decoded "
        "bytes ('-' 0x2D < '{' 0x7B).", lists, [UNSORTED, PCT], [b"models a%7B a-"], inv)
    add("Control: 'models a- a%7B' is sorted by decoded bytes; the call asks for 'a{'.", lists,
        [CONTROL, VALID, PCT], [b"models a- a%7B"], allow(), call(model="a{"))
    add("models with no value.", lists, [UNSORTED, ARGS], [b"models"], inv)
    add("providers with no value.", lists, [UNSORTED, ARGS], [b"providers"], inv)
    add("operations with no value.", lists, [UNSORTED, ARGS], [b"operations"], inv)
    add("ask-first with no value.", lists, [UNSORTED, ARGS], [b"ask-first"], inv)
    add("scopes with a duplicate.", lists, [UNSORTED], [b"scopes a a"], inv)
    add("A safe character percent-encoded: %61 is 'a'.", pct, [PCT], [b"models %61"], inv)
    add("A lower-case hex escape: %2c.", pct, [PCT], [b"models a%2c"], inv)
    add("A truncated escape: 'a%2'.", pct, [PCT], [b"models a%2"], inv)
    add("A non-hex escape: 'a%ZZ'.", pct, [PCT], [b"models a%ZZ"], inv)
    add("A raw ',' (outside the safe set; would be %2C).", pct, [PCT], [b"models a,b"], inv)
    add("Raw double quotes.", pct, [PCT], [b'models "a"'], inv)
    add("Control: ',' written as %2C.", pct, [CONTROL, VALID, PCT], [b"models a%2Cb"], allow(),
        call(model="a,b"))
    add("Two spaces between arguments.", gr, [SPACE], [b"models a  b"], inv)
    add("A trailing space.", gr, [SPACE], [b"models a "], inv)
    add("Two spaces after the name.", gr, [SPACE], [b"models  a"], inv)
    add("A tab inside an argument.", gr, [SPACE], [b"models a\tb"], inv)
    add("Raw UTF-8 (é) in an argument.", gr, [NONASCII], ["models é".encode()], inv)
    add("Control: é percent-encoded as %C3%A9.", pct, [CONTROL, VALID], [b"models %C3%A9"],
        allow(), call(model="é"))
    add("A percent-encoded byte that is not UTF-8 (%FF).", pct, [NONASCII], [b"models %FF"], inv)
    add("An overlong UTF-8 encoding of '/' (%C0%AF).", pct, [NONASCII], [b"models %C0%AF"], inv)
    add("A UTF-8-encoded surrogate (%ED%A0%80).", pct, [NONASCII], [b"models %ED%A0%80"], inv)
    nonce = "b000000000000001"
    budget, reg = "caveats.md#budget", "caveats.md#"
    for line, why in [
        (f"budget {nonce} 1000 EUR fortnight", "an unknown period"),
        (f"budget {nonce} 1000 EUR minute", "period 'minute' (only rate counts minutes)"),
        (f"budget {nonce} 1000 eur month", "a lower-case currency"),
        (f"budget {nonce} 1000 XXX month", "a currency with no known exponent"),
        (f"budget {nonce} 10.00 EUR month", "a decimal amount (amounts are minor units)"),
        ("budget b00000000000001 1000 EUR month", "a 15-digit nonce"),
        ("budget B000000000000001 1000 EUR month", "an upper-case nonce"),
        (f"budget {nonce} 1000 EUR month Mars/Olympus", "an unknown time zone"),
        (f"budget {nonce} 1000 EUR month europe/berlin", "a time zone in the wrong case"),
        (f"budget {nonce} 1000 EUR month localtime",
         "'localtime', a system file, not a tz database name"),
        (f"budget {nonce} 1000 EUR month Europe%2FBerlin", "a percent-encoded '/'"),
    ]:
        add(f"budget with {why}.", budget, [BADVALUE], [line.encode()], inv)
    add("budget naming UTC explicitly: UTC is written by omitting the time zone.",
        "caveats.md#time-zones", [BADVALUE], [f"budget {nonce} 1000 EUR month UTC".encode()], inv)
    add("budget without its nonce.", budget, [ARGS], [b"budget 1000 EUR month"], inv)
    add("budget with a sixth argument.", budget, [ARGS],
        [f"budget {nonce} 1000 EUR month Europe/Berlin x".encode()], inv)
    add("token-quota with period 'hour'.", reg + "token-quota", [BADVALUE],
        [b"token-quota a000000000000001 100 hour"], inv)
    add("rate without its nonce.", reg + "rate", [ARGS], [b"rate 60"], inv)
    add("rate with a period argument (rate is always per minute).", reg + "rate", [ARGS],
        [b"rate c000000000000001 60 minute"], inv)
    add("confirm-above with an unknown currency.", reg + "confirm-above", [BADVALUE],
        [b"confirm-above 500 XXX"], inv)
    add("confirm-above without a currency.", reg + "confirm-above", [ARGS],
        [b"confirm-above 500"], inv)
    add("logging with an unknown level.", reg + "logging", [BADVALUE], [b"logging verbose"], inv)
    add("logging with no level.", reg + "logging", [ARGS], [b"logging"], inv)
    add("logging with two levels.", reg + "logging", [ARGS], [b"logging metadata none"], inv)
    add("zero-retention with an argument.", reg + "zero-retention", [ARGS],
        [b"zero-retention yes"], inv)
    add("app with no argument.", reg + "app", [ARGS], [b"app"], inv)
    add("app with two arguments (a space inside a value is written %20).", reg + "app", [ARGS],
        [b"app My App"], inv)
    names = [f"p{i:03d}".encode() for i in range(129)]
    add("providers with 128 values: the most a caveat may hold.", gr, [CONTROL, VALID, BOUNDARY],
        [b"providers " + b" ".join(names[:128])], allow(), call("p127"))
    add("providers with 129 values.", gr, [ARGS, BOUNDARY],
        [b"providers " + b" ".join(names)], inv)
    add("An unknown caveat with 129 arguments: the type is checked first.", dec,
        [UNKNOWN_TYPE, BOUNDARY], [b"frobnicate " + b" ".join(names)], unk)
    etc = f"budget {nonce} 1000 EUR month Etc/UTC"
    add("Control: 'Etc/UTC' is a tz database name, so it is accepted; it counts the same "
        "periods as omitting the zone, but it is a different caveat with its own counter.",
        "caveats.md#time-zones", [CONTROL, VALID], [etc.encode()],
        allow(debit("budget", tid(f"negative-{n + 1}"), etc, "2026-09", amount=12, limit=1000,
                    unit="EUR", resets_at=utc(2026, 10, 1))))
    tot = f"budget {nonce} 1000 EUR total Europe/Berlin"
    add("Control: a time zone on a total budget is accepted and has no effect.",
        "caveats.md#budget", [CONTROL, VALID], [tot.encode()],
        allow(debit("budget", tid(f"negative-{n + 1}"), tot, "total", amount=12, limit=1000,
                    unit="EUR", resets_at=None)))
    add("budget in 'Factory', the tz database's placeholder for 'zone not set', which ICU (and "
        "so JavaScript's Intl) does not have.", "caveats.md#time-zones", [BADVALUE],
        [f"budget {nonce} 1000 EUR month Factory".encode()], inv)
    # Amount range (appended in revision 1.1).
    add(f"budget with amount {MAX_MINOR + 1}, one more than the largest: its limit in "
        "microunits would pass 2^53-1.", budget, [AMOUNT, BOUNDARY],
        [f"budget {nonce} {MAX_MINOR + 1} EUR month".encode()], inv)
    add("budget with amount 9007199254740991 (2^53-1, a valid integer, far above the largest "
        "amount).", budget, [AMOUNT], [f"budget {nonce} {MAX_SAFE} EUR month".encode()], inv)
    mx = f"budget {nonce} {MAX_MINOR} JPY month"
    add(f"Control: budget with amount {MAX_MINOR}, the largest.", budget,
        [CONTROL, VALID, BOUNDARY], [mx.encode()],
        allow(debit("budget", tid(f"negative-{n + 1}"), mx, "2026-09", amount=7, limit=MAX_MINOR,
                    unit="JPY", resets_at=utc(2026, 10, 1))), call(cost={"JPY": 7}))
    add(f"confirm-above with amount {MAX_MINOR + 1}, one more than the largest.",
        reg + "confirm-above", [AMOUNT, BOUNDARY],
        [f"confirm-above {MAX_MINOR + 1} EUR".encode()], inv)
    add(f"Control: confirm-above with amount {MAX_MINOR}, the largest.", reg + "confirm-above",
        [CONTROL, VALID, BOUNDARY], [f"confirm-above {MAX_MINOR} EUR".encode()], allow())
    og = "caveats.md#origin"
    for text, why in [
        (b"origin https://Notes.example", "an upper-case host"),
        (b"origin HTTPS://notes.example", "an upper-case scheme"),
        (b"origin https://notes.example:443", "the scheme's default port"),
        (b"origin http://notes.example:80", "the scheme's default port"),
        (b"origin https://notes.example/", "a trailing slash"),
        (b"origin https://notes.example/app", "a path"),
        (b"origin https://user@notes.example", "userinfo"),
        (b"origin ftp://notes.example", "a scheme other than https or http"),
        (b"origin notes.example", "no scheme"),
        (b"origin https://notes.example:0", "port 0"),
        (b"origin https://notes.example:08443", "a port with a leading zero"),
        (b"origin https://notes.example:65536", "a port above 65535"),
        (b"origin http://%5B0:0:0:0:0:0:0:1%5D:5500", "an IPv6 address not in its compressed "
                                                      "form"),
        (b"origin http://127.000.0.1", "an IPv4 address with leading zeros"),
        (b"origin https://notes.example.", "a trailing dot"),
        (b"origin https://notes.example https://app.example", "two arguments"),
        (b"origin", "no argument"),
        (b"origin null", "the opaque origin 'null'"),
    ]:
        add(f"origin with {why}: an origin caveat holds one origin in its canonical form.", og,
            [ARGS] if "argument" in why else [BADVALUE], [text], inv)
    add("Control: origin https://notes.example:8443 (a non-default port is kept).", og,
        [CONTROL, VALID], [b"origin https://notes.example:8443"], allow())
    return f
