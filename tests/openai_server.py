"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, driven by a script.

Tests and benchmarks point the real `openai` client at it (`base_url=server.base_url`). Each
POST /v1/chat/completions takes the next action from the script; when the script is empty the
`responder` (if set) decides, otherwise the server answers 503. Every request is recorded, so
tests can assert what the client sent (headers, body) and when.

    with ScriptedOpenAIServer() as server:
        server.push(Status(429, retry_after="0.2"), Answer("<<<<<<< SEARCH ..."))
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Answer:
    """200 with a ChatCompletion whose message content is `text`.

    Token counts default to ~4 characters per token of the request's messages and of the text;
    `usage=False` leaves the usage object out (some compatible servers do)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage: bool = True
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Status:
    """An error status (429, 500, 503, 401, ...) with an OpenAI-style error body."""

    code: int
    retry_after: str | None = None  # Retry-After header value, seconds
    message: str = "scripted error"


@dataclass(frozen=True)
class Sleep:
    """Wait `seconds` before answering with `then` (past the client's timeout, the client gives up)."""

    seconds: float
    then: Answer | Status | None = None


@dataclass(frozen=True)
class Malformed:
    """200 with a body that is not JSON."""

    body: str = '{"id": "chatcmpl-broken", "choices": [ {"message": '


Action = Answer | Status | Sleep | Malformed


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time: float  # time.monotonic() when it arrived

    @property
    def json(self) -> dict:
        return json.loads(self.body) if self.body else {}

    @property
    def messages(self) -> list[dict]:
        return self.json.get("messages", [])


@dataclass
class _State:
    script: deque = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)
    responder: Callable[[Request], Action] | None = None
    model: str = "scripted-model"


def _completion(state: _State, request: Request, answer: Answer) -> dict:
    body = request.json
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    prompt = answer.prompt_tokens if answer.prompt_tokens is not None else max(1, prompt_chars // 4)
    completion = answer.completion_tokens if answer.completion_tokens is not None else max(1, len(answer.text) // 4)
    out = {
        "id": f"chatcmpl-{len(state.requests)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", state.model),
        "system_fingerprint": "fp_scripted",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
    }
    if answer.usage:
        out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # keep test output clean

    def _record(self) -> Request:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(self.command, self.path, dict(self.headers.items()), body, time.monotonic())
        with self.server.state.lock:
            self.server.state.requests.append(req)
        return req

    def _send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before the answer came

    def do_GET(self) -> None:
        self._record()
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": self.server.state.model, "object": "model", "created": 0, "owned_by": "pgolf-tests"}
            self._send(200, json.dumps({"object": "list", "data": [model]}).encode())
        else:
            self._error(404, "not found")

    def do_POST(self) -> None:
        req = self._record()
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        state = self.server.state
        with state.lock:
            action = state.script.popleft() if state.script else None
        if action is None and state.responder is not None:
            action = state.responder(req)
        self._act(req, action if action is not None else Status(503, message="script exhausted"))

    def _act(self, req: Request, action: Action) -> None:
        if isinstance(action, Sleep):
            self.server.state.closing.wait(action.seconds)
            if action.then is not None:
                self._act(req, action.then)
            return
        if isinstance(action, Malformed):
            self._send(200, action.body.encode())
        elif isinstance(action, Status):
            headers = {"Retry-After": action.retry_after} if action.retry_after is not None else {}
            self._error(action.code, action.message, headers)
        else:
            self._send(200, json.dumps(_completion(self.server.state, req, action)).encode())

    def _error(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = "rate_limit_exceeded" if code == 429 else "server_error" if code >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        self._send(code, json.dumps(body).encode(), headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State


class ScriptedOpenAIServer:
    """The server; use as a context manager or call start() / close()."""

    def __init__(self, model: str = "scripted-model") -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(model=model)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="scripted-openai", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[Request]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    @property
    def pending(self) -> int:
        with self._server.state.lock:
            return len(self._server.state.script)

    def push(self, *actions: Action) -> None:
        with self._server.state.lock:
            self._server.state.script.extend(actions)

    def set_responder(self, responder: Callable[[Request], Action] | None) -> None:
        self._server.state.responder = responder

    def start(self) -> ScriptedOpenAIServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.state.closing.set()  # wake sleeping handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
