"""A tiny Hugging Face Hub on 127.0.0.1 for download tests: real HTTP, real huggingface_hub.

It answers `HEAD/GET /{org}/{repo}/resolve/{revision}/{filename}` the way the hub does:
- small files ("regular" git files): 200 with ETag, X-Repo-Commit, Content-Length;
- large files (LFS, here: anything not .json/.txt): 302 to a CDN with X-Linked-Size,
  X-Linked-Etag and X-Repo-Commit on the redirect. The CDN is the same server reached as
  `localhost` instead of `127.0.0.1`, so huggingface_hub treats it as another host (it stops
  at the redirect for metadata, and a client must not send the token there);
- Range requests -> 206 with Content-Range; errors carry X-Error-Code like the hub's.
Every request is recorded (method, path, headers) for the tests to inspect.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case


@dataclass
class FakeHub:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (repo, filename) -> bytes
    token: str | None = None  # when set, every resolve request needs `Bearer <token>`
    cut_after: dict[str, int] = field(default_factory=dict)  # filename -> bytes sent on next GET
    size_override: dict[str, int] = field(default_factory=dict)  # filename -> size to claim
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def gets(self, filename: str) -> list[Request]:
        """The GET requests that fetched `filename`'s bytes (hub or CDN)."""
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + filename)]

    # --- request handling ----------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        self.requests.append(
            Request(h.command, h.path, {k.lower(): v for k, v in h.headers.items()})
        )
        if h.path.startswith("/cdn/"):
            repo, _, filename = h.path[len("/cdn/") :].partition("/-/")
            return self._serve_bytes(h, head, repo, filename)
        parts = h.path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(h, 404, "RepoNotFound")
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        if self.token and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(h, 401, "GatedRepo")
        if not any(r == repo for r, _ in self.files):
            return self._error(h, 404, "RepoNotFound")
        if (repo, filename) not in self.files:
            return self._error(h, 404, "EntryNotFound")
        if filename.endswith((".json", ".txt")):
            return self._serve_bytes(h, head, repo, filename)
        data = self.files[(repo, filename)]
        h.send_response(302)
        h.send_header("Location", f"http://localhost:{self.port}/cdn/{repo}/-/{filename}")
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("X-Linked-Size", str(self.size_override.get(filename, len(data))))
        h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _serve_bytes(self, h, head: bool, repo: str, filename: str) -> None:
        data = self.files.get((repo, filename))
        if data is None:
            return self._error(h, 404, "EntryNotFound")
        start = 0
        rng = h.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return self._error(h, 416, "RangeNotSatisfiable")
        body = data[start:]
        h.send_response(206 if rng else 200)
        h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(body)))
        if rng:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        cut = self.cut_after.pop(filename, None)
        if cut is not None:  # the connection drops mid-file
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(body)

    def _error(self, h, code: int, error_code: str) -> None:
        body = f'{{"error": "{error_code}"}}'.encode()
        h.send_response(code)
        h.send_header("X-Error-Code", error_code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
