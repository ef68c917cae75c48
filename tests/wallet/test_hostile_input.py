"""Hostile input at the wallet's HTTP surfaces: a clear refusal, never a 500.

Each table row is a request a real client can send to a real wallet server on loopback, with
the answer the endpoint gives to any bad input of its kind (its own status and error field, or
its own error page). The rows are the inputs earlier rounds missed (session 11, hostile11):

* JSON nested past the parser's recursion limit (json.loads raised RecursionError);
* a lone UTF-16 surrogate in a JSON string (it failed later, where the text was encoded);
* a form the multipart parser refuses (too many fields, a field over 1 MB), at endpoints
  that answer JSON: Starlette's own text/plain 400 came back instead;
* a body of any size (a 200 MB POST /login, before any check, was held whole), or one that
  never ends (the connection held for ever): the wallet's own endpoints had no bound;
* an authorization request with a parameter twice (RFC 6749 section 3.1: MUST NOT): the
  wallet read the last and went on.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from capwallet.wallet import client_metadata as cm
from capwallet.wallet.body_limit import BODY_TIMEOUT, MAX_BODY
from capwallet.wallet.deployment import Deployment
from capwallet.wallet.home import WalletHome
from capwallet.wallet.keystore import Keystore
from capwallet.wallet.runner import RunningWallet, ServeOptions, running_wallet

from .oauth_helpers import REDIRECT, approve, authorize_params, error_link_query, exchange

DEEP_LIST = b"[" * 5000 + b"]" * 5000  # past json's recursion limit (about 1,000 levels)
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000
LONE = '"\\ud800"'  # a lone surrogate, escaped as JSON writes it
LONE_UTF8 = b'"\xed\xa0\x80"'  # the same code point as three UTF-8 bytes
DIGEST = "0" * 64


def _check(scope: str, **extra: bytes) -> bytes:
    """A /resource/check body for one scope, with ``extra`` members as raw JSON bytes."""
    out = b'{"scopes":["%s"],"digest":"%s"' % (scope.encode(), DIGEST.encode())
    return out + b"".join(b',"%s":%s' % (k.encode(), v) for k, v in extra.items()) + b"}"


# (body, expected status): /resource/check answers invalid_request JSON to any bad body.
RESOURCE_CHECK = [
    (_check("posts:read"), 200),  # the control: the same request, well formed
    (DEEP_LIST, 400), (DEEP_OBJECT, 400),
    (_check("posts:read", summary=LONE.encode()), 400),
    (_check("posts:publish", summary=LONE.encode()), 400),
    (_check("posts:read", summary=LONE_UTF8), 400),
    (_check("posts:read", approval=LONE.encode()), 400),
]


def test_resource_check_refuses_hostile_json(wallet: RunningWallet,
                                             browser_client: httpx.Client) -> None:
    query, verifier = approve(browser_client)
    token = exchange(wallet.base_url, query["code"], verifier).json()["access_token"]
    for body, status in RESOURCE_CHECK:
        r = httpx.post(wallet.base_url + "/resource/check", content=body, timeout=30,
                       headers={"authorization": "Bearer " + token,
                                "content-type": "application/json"})
        assert r.status_code == status, (body[:60], r.status_code, r.text[:200])
        if status == 400:
            assert r.json()["error"] == "invalid_request", r.text


@pytest.mark.parametrize("body", [DEEP_LIST, DEEP_OBJECT, b'{"secret":' + LONE.encode() + b"}",
                                  b'{"secret":' + LONE_UTF8 + b"}"])
def test_sign_in_refuses_hostile_json(wallet: RunningWallet, body: bytes) -> None:
    r = httpx.post(wallet.base_url + "/login", content=body, timeout=30,
                   headers={"origin": wallet.base_url, "content-type": "application/json"})
    assert r.status_code == 403, r.text[:200]
    assert "This sign-in link is not valid" in r.text


def test_authorization_details_nested_too_deeply_go_back_to_the_app(
        browser_client: httpx.Client) -> None:
    params, _ = authorize_params(authorization_details="[" * 3000 + "]" * 3000)
    r = browser_client.get("/authorize?" + urlencode(params))
    assert r.status_code == 400, r.text[:200]
    assert "invalid_authorization_details" in r.text and "nested too deeply" in r.text


@pytest.mark.parametrize("body", [DEEP_LIST, json.dumps({"client_name": "\ud800"}).encode()])
def test_a_hostile_metadata_document_is_the_apps_error(body: bytes) -> None:
    url = "https://notes.example/client.json"
    doc = body if body.startswith(b"[") else body.replace(b"{", b'{"client_id":"%s",'
                                                           % url.encode(), 1)
    with pytest.raises(cm.ClientMetadataError) as err:
        cm.parse_document(url, doc)
    assert err.value.reason == cm.INVALID


@pytest.fixture
def hosted(home: WalletHome, keystore: Keystore) -> Iterator[RunningWallet]:
    options = ServeOptions(port=0, deployment=Deployment("https://wallet.capwallet.test",
                                                         ("127.0.0.1/32",)))
    with running_wallet(home, keystore, with_relay=False, options=options) as w:
        yield w


@pytest.mark.parametrize(("path", "status", "error"), [
    ("/signin/passkey", 400, "invalid_request"),
    ("/passkeys/register", 403, "forbidden"),
])
def test_passkey_endpoints_refuse_hostile_json(hosted: RunningWallet, path: str, status: int,
                                               error: str) -> None:
    for body in (DEEP_LIST, DEEP_OBJECT):
        r = httpx.post(f"http://127.0.0.1:{hosted.local_port}{path}", content=body,
                       timeout=30, headers={
                           "host": "wallet.capwallet.test", "x-forwarded-proto": "https",
                           "origin": "https://wallet.capwallet.test",
                           "content-type": "application/json"})
        assert r.status_code == status, (path, r.text[:200])
        assert r.json()["error"] == error


# Forms Starlette's parser refuses: over 1,000 fields (a field over 1 MB is past the body limit,
# test_a_body_past_the_wallets_limit_is_refused_before_it_is_read).
HUGE_FORMS = [b"&".join(b"f%d=1" % i for i in range(1001))]


def test_a_form_the_parser_refuses_is_a_json_error_where_json_is_promised(
        wallet: RunningWallet, browser_client: httpx.Client) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    for body in HUGE_FORMS:
        r = httpx.post(wallet.base_url + "/token", content=body, headers=form, timeout=30)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text[:200]
        assert r.headers["cache-control"] == "no-store"
        r = browser_client.post("/api/sessions/x/end", content=body,
                                headers={**form, "origin": wallet.base_url})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text[:200]


def test_an_authorization_parameter_sent_twice_is_refused(browser_client: httpx.Client) -> None:
    params, _ = authorize_params()
    for name in params:
        again = "http://127.0.0.1:9/other" if name == "redirect_uri" else params[name]
        r = browser_client.get("/authorize?" + urlencode(params) + "&"
                               + urlencode({name: again}))
        if name == "redirect_uri":  # which one would an error go to? Shown, never followed
            assert r.status_code == 400 and "location" not in r.headers, r.text[:200]
            assert "redirect_uri_invalid" in r.text and "more than once" in r.text
        else:  # an error the app is told, at its one redirect_uri
            q = error_link_query(r)
            assert q["error"] == "invalid_request", (name, q)
            assert q["error_description"] == f"{name} was sent more than once"
    for name, value in (("client_id", "https://a.example"), ("origin", "https://a.example")):
        r = browser_client.get("/authorize?" + urlencode(params) + "&"
                               + urlencode([(name, value), (name, value)]))
        assert r.status_code == 400 and "location" not in r.headers, r.text[:200]
        assert "client_id_invalid" in r.text and "more than once" in r.text


# The wallet's own endpoints that read a body; anyone may reach the first three.
READ_BODIES = ["/login", "/resource/check", "/token", "/authorize", "/logout"]


def test_a_body_past_the_wallets_limit_is_refused_before_it_is_read(
        wallet: RunningWallet) -> None:
    for path in READ_BODIES:
        for announced in (True, False):  # a Content-Length, or chunks with no length
            body = b"a" * (MAX_BODY + 1)
            content = body if announced else iter([body[:MAX_BODY], body[MAX_BODY:]])
            r = httpx.post(wallet.base_url + path, content=content, timeout=30,
                           headers={"origin": wallet.base_url,
                                    "content-type": "application/x-www-form-urlencoded"})
            assert r.status_code == 413, (path, announced, r.text[:200])
            assert r.json()["error"] == "request_too_large"
    # At the limit, the endpoint's own answer (here: not a sign-in secret).
    r = httpx.post(wallet.base_url + "/login", content=b" " * MAX_BODY, timeout=30,
                   headers={"origin": wallet.base_url})
    assert r.status_code == 403 and "This sign-in link is not valid" in r.text


def test_a_body_that_never_ends_is_cut_off(home: WalletHome, keystore: Keystore) -> None:
    assert BODY_TIMEOUT > 0.5  # the default, shortened here
    with running_wallet(home, keystore, with_relay=False,
                        options=ServeOptions(port=0, body_timeout=0.5)) as w:
        with socket.create_connection(("127.0.0.1", w.local_port), timeout=10) as s:
            started = time.monotonic()
            s.sendall(b"POST /login HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n" % w.local_port +
                      b"origin: " + w.base_url.encode() + b"\r\ncontent-length: 100\r\n\r\n{")
            answer = s.recv(65536)
            waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"request_timeout"' in answer
    assert waited < 5  # the body timeout, not the socket's 10 s


def test_a_token_request_parameter_sent_twice_is_refused_and_the_code_kept(
        wallet: RunningWallet, browser_client: httpx.Client) -> None:
    """RFC 6749 3.2 as 3.1: each parameter once. The code is not burnt by such a request."""
    query, verifier = approve(browser_client)
    fields = {"grant_type": "authorization_code", "code": query["code"],
              "redirect_uri": REDIRECT, "code_verifier": verifier}
    for name, value in fields.items():
        body = urlencode(fields) + "&" + urlencode({name: value})
        r = httpx.post(wallet.base_url + "/token", content=body, timeout=30,
                       headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400, (name, r.text)
        assert r.json() == {"error": "invalid_request",
                            "error_description": f"{name} was sent more than once"}
    assert exchange(wallet.base_url, query["code"], verifier).status_code == 200
