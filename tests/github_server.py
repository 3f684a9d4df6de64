"""A local stand-in for the GitHub REST API's pull-request endpoint, on 127.0.0.1.

Records every request (method, path, headers, body) and answers POST /repos/{owner}/{repo}/pulls
like GitHub does: 201 with a PR, 401 for a wrong token, 422 when the head already has a PR, and
optionally a few 502s first (to exercise retries). Use as a context manager:

    with GitHubServer(token="t0ken") as gh:
        ... --github-api gh.url ...
        gh.requests[0]["headers"]["Authorization"]
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class GitHubServer:
    def __init__(self, token: str, fail_first: int = 0):
        self.token = token
        self.fail_first = fail_first  # answer this many requests with 502 before behaving
        self.requests: list[dict] = []
        self.pulls: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> GitHubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict]:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers,
                                  "body": body.decode("utf-8", errors="replace")})
            if self.fail_first > 0:
                self.fail_first -= 1
                return 502, {"message": "Bad Gateway"}
            m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/pulls", path)
            if method != "POST" or m is None:
                return 404, {"message": "Not Found"}
            if headers.get("Authorization") != f"Bearer {self.token}":
                return 401, {"message": "Bad credentials"}
            try:
                data = json.loads(body)
            except ValueError:
                return 400, {"message": "Problems parsing JSON"}
            missing = [k for k in ("title", "head", "base") if not data.get(k)]
            if missing:
                return 422, {"message": "Validation Failed", "errors": [{"field": k, "code": "missing_field"}
                                                                        for k in missing]}
            if any(p["head"] == data["head"] for p in self.pulls):
                return 422, {"message": "Validation Failed",
                             "errors": [{"message": f"A pull request already exists for {data['head']}."}]}
            number = len(self.pulls) + 1
            pr = {"number": number, "html_url": f"https://github.com/{m[1]}/{m[2]}/pull/{number}",
                  "title": data["title"], "head": data["head"], "base": data["base"], "body": data.get("body")}
            self.pulls.append(pr)
            return 201, pr

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = server._answer(method, self.path, dict(self.headers.items()), body)
                out = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self._serve("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        return Handler
