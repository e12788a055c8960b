"""The app's HTTP side: the standard library's threading server, one HTML page, JSON endpoints.

    GET  /                       the page
    GET  /api/info               the run: method, classes, threshold, layers / heads / prompts, splits, plots
    POST /api/predict?name=F     body: the image file's bytes -> prediction (+ overlays for FPT/FPT+)
    GET  /api/explain?id=&layer=&head=&prompt=   overlays of an uploaded image at other selectors
    GET  /api/split?name=test&show=all|errors|fp|fn   the split's predictions, most confident first
    GET  /api/sample?split=&path=                one dataset image of the split, predicted and explained
    GET  /api/plot/NAME                          one of the run's plots (ROC, confusion, curves, reliability)

Every error is a JSON {"error": message} the page shows; no stack trace leaves the server.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from ..errors import FPTPlusError
from .page import PAGE
from .service import AppError, AppService


def _int(q: dict[str, list[str]], key: str) -> int | None:
    value = q.get(key, [""])[0]
    if value in ("", "all", "mean", "none"):
        return None
    try:
        return int(value)
    except ValueError:
        raise AppError(f"{key} must be an integer, got {value!r}") from None


def make_handler(service: AppService, max_upload: int, quiet: bool = False) -> type[BaseHTTPRequestHandler]:
    """A request handler bound to one loaded run; uploads above `max_upload` bytes are refused (413)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "fptplus-app"

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj: Any, status: int = 200) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _guard(self, fn) -> None:
            try:
                fn()
            except AppError as err:
                self._json({"error": str(err)}, err.status)
            except FPTPlusError as err:
                self._json({"error": str(err)}, 400)
            except Exception as err:  # the page gets one line; the console gets the type
                sys.stderr.write(f"app: {type(err).__name__}: {err}\n")
                self._json({"error": f"internal error ({type(err).__name__}: {err})"}, 500)

        def do_GET(self) -> None:
            self._guard(self._get)

        def do_POST(self) -> None:
            self._guard(self._post)

        def _get(self) -> None:
            url = urlparse(self.path)
            q = parse_qs(url.query)
            if url.path in ("/", "/index.html"):
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/info":
                self._json({**service.info(), "max_upload": max_upload})
            elif url.path == "/api/explain":
                uid = q.get("id", [""])[0]
                self._json(service.explain(uid, _int(q, "layer"), _int(q, "head"), _int(q, "prompt")))
            elif url.path == "/api/split":
                self._json(service.split(q.get("name", ["test"])[0], q.get("show", ["all"])[0]))
            elif url.path == "/api/sample":
                self._json(service.sample(q.get("split", ["test"])[0], q.get("path", [""])[0]))
            elif url.path.startswith("/api/plot/"):
                self._send(200, service.plot(url.path.rsplit("/", 1)[1]), "image/png")
            else:
                raise AppError(f"no such page: {url.path}", 404)

        def _post(self) -> None:
            url = urlparse(self.path)
            if url.path != "/api/predict":
                raise AppError(f"no such endpoint: {url.path}", 404)
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_upload:
                self.close_connection = True  # the body is not read
                raise AppError(f"the file is {length / 2**20:.1f} MiB; this app accepts up to "
                               f"{max_upload / 2**20:.0f} MiB (fptplus app --max-upload-mb)", 413)  # fmt: skip
            if length <= 0:
                raise AppError("empty upload")
            data = self.rfile.read(length)
            name = parse_qs(url.query).get("name", ["upload"])[0]
            self._json(service.predict_bytes(data, name))

    return Handler


def serve(service: AppService, host: str = "127.0.0.1", port: int = 7860, max_upload: int = 64 * 2**20,
          quiet: bool = False) -> ThreadingHTTPServer:  # fmt: skip
    """A started-but-not-running server (call `serve_forever`; port 0 picks a free one: `server.server_port`)."""
    server = ThreadingHTTPServer((host, port), make_handler(service, max_upload, quiet))
    server.daemon_threads = True
    return server
