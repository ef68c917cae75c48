"""A model call as every fake provider route handler sees it, and the answers it can give.

The chat, embeddings and Anthropic handlers (fake_provider.server) and the Responses API
handler (fake_provider.responses) share this: the per-app state, the key check and request
record (begin_call), the body's common fields, the fault that applies to the call
(apply_fault), errors in the shape of the provider the route imitates (ApiError), and the
JSON and SSE responses, including the ones that drop the connection. It imports no handler,
so the handler modules depend on it and never on each other.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import socket
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fake_provider.faults import Fault, QueuedFault, parse_fault

MAX_RECORDED_REQUESTS = 10_000

Flavor = Literal["openai", "anthropic"]
CYCLE_KEY = "fake_provider.cycle"  # the scope key under which uvicorn's request cycle is kept

# ---------------------------------------------------------------------------------------------
# Per-app state


@dataclass
class ProviderState:
    """One fake provider's key, queued faults and recorded requests (app.state.fake)."""

    api_key: bytes
    default_reply_tokens: int
    faults: deque[QueuedFault] = field(default_factory=deque)
    requests: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=MAX_RECORDED_REQUESTS)
    )
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def auth_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.api_key)

    def take_fault(self) -> Fault | None:
        if not self.faults:
            return None
        head = self.faults[0]
        head.remaining -= 1
        if head.remaining <= 0:
            self.faults.popleft()
        return head.fault

    def queued(self) -> list[dict[str, Any]]:
        return [{"mode": q.fault.mode, "remaining": q.remaining} for q in self.faults]


def provider_state(request: Request) -> ProviderState:
    state: ProviderState = request.app.state.fake
    return state


# ---------------------------------------------------------------------------------------------
# Responses


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(obj: object, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(obj), status, headers, media_type="application/json")


class ApiError(Exception):
    """An error answer, rendered in the shape of whichever provider the route imitates."""

    _ANTHROPIC_TYPES: ClassVar[dict[int, str]] = {
        400: "invalid_request_error", 401: "authentication_error",
        404: "not_found_error", 429: "rate_limit_error", 500: "api_error"}

    def __init__(self, status: int, message: str, *, openai_type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.openai_type = openai_type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self, flavor: Flavor, request_id: str) -> Response:
        headers = dict(self.headers)
        if flavor == "anthropic":
            headers["request-id"] = request_id
            kind = self._ANTHROPIC_TYPES.get(self.status, "api_error")
            body: dict[str, Any] = {"type": "error",
                                    "error": {"type": kind, "message": self.message},
                                    "request_id": request_id}
        else:
            headers["x-request-id"] = request_id
            body = {"error": {"message": self.message, "type": self.openai_type,
                              "param": self.param, "code": self.code}}
        return json_response(body, self.status, headers)


def _auth_error(flavor: Flavor) -> ApiError:
    if flavor == "anthropic":
        return ApiError(401, "invalid x-api-key")
    return ApiError(401, "Incorrect API key provided. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.", code="invalid_api_key")


def _fault_error(fault: Fault, flavor: Flavor) -> ApiError:
    if fault.kind == "http429":
        message = ("Number of request tokens has exceeded your per-minute rate limit"
                   if flavor == "anthropic" else
                   "Rate limit reached for requests. Please try again in 1s.")
        return ApiError(429, message, openai_type="requests", code="rate_limit_exceeded",
                        headers={"retry-after": "1"})
    message = ("Internal server error" if flavor == "anthropic" else
               "The server had an error while processing your request. Sorry about that!")
    return ApiError(500, message, openai_type="server_error")


async def _drop_connection(scope: Scope, *, reset: bool) -> None:
    """Close the client's TCP connection under uvicorn, mid-response or before any response.

    ASGI has no "abort", so the app reaches uvicorn's transport through the request cycle that
    owns the raw `send` (captured by FakeProviderApp). `reset` sends a RST (SO_LINGER 0);
    otherwise bytes already written are flushed first and the close is an ordinary FIN.
    Once uvicorn sees the connection gone it drops anything else the app sends, silently.
    """
    cycle = scope.get(CYCLE_KEY)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("fake provider: cannot drop the connection (not served by uvicorn)")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        for _ in range(1000):
            if not transport.get_write_buffer_size() or transport.is_closing():
                break
            await asyncio.sleep(0.001)
    transport.abort()
    for _ in range(100):
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0)


class _ResetResponse(Response):
    """No response at all: the connection is reset."""

    def __init__(self) -> None:
        self.status_code = 0
        self.background = None
        self.raw_headers = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _drop_connection(scope, reset=True)


class EventStream(Response):
    """An SSE response sent frame by frame: preamble, content frames, tail.

    `cut_after` sends only that many content frames and then closes the connection;
    `interval` sleeps before every frame after the first.
    """

    media_type = "text/event-stream"

    def __init__(self, preamble: list[bytes], content: list[bytes], tail: list[bytes], *,
                 headers: dict[str, str], interval: float = 0.0,
                 cut_after: int | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({**headers, "cache-control": "no-cache"})
        self.preamble, self.content, self.tail = preamble, content, tail
        self.interval = interval
        self.cut_after = cut_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        cut = self.cut_after is not None
        frames = itertools.chain(
            self.preamble,
            self.content[: self.cut_after] if cut else self.content,
            () if cut else self.tail,
        )
        first = True
        for frame in frames:
            if self.interval and not first:
                await asyncio.sleep(self.interval)
            first = False
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        if cut:
            await _drop_connection(scope, reset=False)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def malformed_body(body: object) -> Response:
    text = dumps(body)
    return Response(text[: len(text) // 2], 200, media_type="application/json")


def stream_response(preamble: list[bytes], content: list[bytes], tail: list[bytes],
                     headers: dict[str, str], fault: Fault | None) -> EventStream:
    kind = fault_kind(fault)
    return EventStream(
        preamble, content, tail, headers=headers,
        interval=fault.arg / 1000 if fault is not None and kind == "slow_stream" else 0.0,
        cut_after=fault.arg if fault is not None and kind == "stream_cut" else None,
    )


# ---------------------------------------------------------------------------------------------
# Request parsing and validation


@dataclass
class Call:
    """What every model call handler needs after auth, parsing and the fault lookup."""

    request: Request
    flavor: Flavor
    body: dict[str, Any]
    record: dict[str, Any]
    request_id: str
    fault: Fault | None = None


def int_field(body: dict[str, Any], name: str, *, low: int, high: int | None = None,
               required: bool = False) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name}: Field required", param=name)
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ApiError(400, f"Invalid '{name}': expected an integer {bound}.", param=name)
    return value


def requested_model(body: dict[str, Any]) -> tuple[str, Fault | None]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    if not model.startswith("fault-"):
        return model, None
    try:
        return model, parse_fault(model.removeprefix("fault-"))
    except ValueError as exc:
        raise ApiError(404, f"The model `{model}` does not exist: {exc}", param="model",
                       code="model_not_found") from None


def stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise ApiError(400, "stream: expected a boolean", param="stream")
    return stream


def _credential(request: Request, flavor: Flavor) -> tuple[str | None, str | None]:
    """(header that carried the key, the key). Anthropic takes `x-api-key` first and also
    `Authorization: Bearer`, which its current SDK sends; OpenAI takes only the Bearer."""
    if flavor == "anthropic" and "x-api-key" in request.headers:
        return "x-api-key", request.headers["x-api-key"]
    authorization = request.headers.get("authorization")
    if authorization is None:
        return None, None
    scheme, _, token = authorization.partition(" ")
    return "authorization", token.strip() if scheme.lower() == "bearer" else None


async def begin_call(request: Request, flavor: Flavor, *, has_body: bool = True) -> Call:
    """Record the request, check the key, parse the JSON body. Raises ApiError."""
    state = provider_state(request)
    auth_header, given = _credential(request, flavor)
    auth_ok = state.auth_ok(given)
    key = state.api_key.decode()
    headers = {
        name: ("[redacted]" if key in value else value)
        for name, value in request.headers.items()
        if name not in ("authorization", "x-api-key")
    }
    body: Any = None
    error: ApiError | None = None
    if has_body:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            error = ApiError(400, "We could not parse the JSON body of your request.")
        else:
            if not isinstance(body, dict):
                error = ApiError(400, "The request body must be a JSON object.")
    record: dict[str, Any] = {
        "method": request.method,
        "path": request.scope["path"],
        "query": request.scope["query_string"].decode("latin-1"),
        "headers": headers,
        "auth_ok": auth_ok,
        "auth_header": auth_header,
        "body": body,
        "fault": None,
        "status": None,
    }
    state.requests.append(record)
    call = Call(request, flavor, body if isinstance(body, dict) else {}, record,
                 f"req_fake{next(state.ids):012d}")
    if not auth_ok:
        raise CallFailed(call, _auth_error(flavor))
    if error is not None:
        raise CallFailed(call, error)
    return call


class CallFailed(Exception):
    def __init__(self, call: Call, error: ApiError) -> None:
        super().__init__(error.message)
        self.call = call
        self.error = error


async def apply_fault(call: Call, model_fault: Fault | None) -> Response | None:
    """Pick the fault (model name first, else the queue); answer now if it pre-empts the reply."""
    fault = model_fault or provider_state(call.request).take_fault()
    call.fault = fault
    if fault is None:
        return None
    call.record["fault"] = fault.mode
    if fault.kind == "delay":
        await asyncio.sleep(fault.arg / 1000)
    elif fault.kind in ("http500", "http429"):
        return _fault_error(fault, call.flavor).response(call.flavor, call.request_id)
    elif fault.kind == "reset":
        return _ResetResponse()
    return None


def fault_kind(fault: Fault | None) -> str:
    return fault.kind if fault is not None else ""
