"""The app's HTTP side: the standard library's threading server, hardened; one page, its script and style, JSON.

    GET  /  /app.js  /app.css    the page (no inline script: a Content-Security-Policy forbids it)
    GET  /api/info               the run: method, classes, threshold, layers / heads / prompts, splits, plots
    POST /api/predict?name=F     body: the image file's bytes -> prediction (+ overlays for FPT/FPT+)
    GET  /api/explain?id=&layer=&head=&prompt=   overlays of an uploaded image at other selectors
    GET  /api/split?name=test&show=all|errors|fp|fn   the split's predictions, most confident first
    GET  /api/sample?split=&path=                one dataset image of the split, predicted and explained
    GET  /api/plot/NAME                          one of the run's plots (ROC, confusion, curves, reliability)

Hardening: a listen backlog of 128 and at most `MAX_HANDLERS` connections served at once (more are answered 503
at once, never reset); a socket that sends nothing for `TIMEOUT` seconds is closed; a client that goes away is not
an error; requests whose Host is not this server (DNS rebinding) or whose Origin is another site (cross-origin
POST) are refused 403; every answer carries a CSP, nosniff and no-referrer. Every error is a JSON
{"error": message} the page shows as text; no stack trace leaves the server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from ..errors import ConfigError, FPTPlusError
from .page import ASSETS, PAGE
from .service import AppError, AppService

MAX_HANDLERS = 64  # connections served at once; uploads wait for the model's lock inside them
TIMEOUT = 30.0  # seconds a connection may stay silent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
QUIET_ERRORS = (ConnectionError, TimeoutError, socket.timeout)


def _int(q: dict[str, list[str]], key: str) -> int | None:
    value = q.get(key, [""])[0]
    if value in ("", "all", "mean", "none"):
        return None
    try:
        return int(value)
    except ValueError:
        raise AppError(f"{key} must be an integer, got {value!r}") from None


def _host_only(authority: str) -> str:
    """'localhost:7860' -> 'localhost'; '[::1]:7860' -> '::1'."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


class AllowedHosts:
    """The names a browser may use for this server: loopback names when it listens on loopback; any address of
    this machine and its host names when it listens on every interface; plus `extra`. Everything else (a DNS
    name rebound to 127.0.0.1 by another site) is refused."""

    def __init__(self, bound: str, port: int, extra: tuple[str, ...] = ()) -> None:
        self.port = port
        names = {"localhost", "127.0.0.1", "::1", bound.lower(), *(h.lower() for h in extra)}
        self.any_ip = bound in ("0.0.0.0", "::", "")
        if self.any_ip:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        self.names = names

    def ok_host(self, header: str | None) -> bool:
        if not header:
            return False
        host = _host_only(header.strip().lower())
        if host in self.names:
            return True
        if self.any_ip:
            try:
                ipaddress.ip_address(host)  # a literal address of this machine's interfaces
                return True
            except ValueError:
                return False
        return False

    def ok_origin(self, origin: str | None) -> bool:
        if origin is None:
            return True  # not a browser's cross-site request (curl, scripts on this machine)
        url = urlparse(origin)
        return url.scheme in ("http", "https") and self.ok_host(url.netloc)


def make_handler(service: AppService, max_upload: int, quiet: bool = False,
                 hosts: AllowedHosts | None = None) -> type[BaseHTTPRequestHandler]:  # fmt: skip
    """A request handler bound to one loaded run; uploads above `max_upload` bytes are refused (413)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "fptplus-app"
        timeout = TIMEOUT  # the socket's timeout: an idle connection is closed

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Malformed request lines and headers: a short JSON answer, like every other error."""
            with contextlib.suppress(*QUIET_ERRORS):
                self._json({"error": f"bad request ({message or code})"}, code)

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj: Any, status: int = 200) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _guard(self, fn) -> None:
            try:
                if hosts is not None and not hosts.ok_host(self.headers.get("Host")):
                    raise AppError("this server answers only requests addressed to it (Host header refused)", 403)
                if hosts is not None and not hosts.ok_origin(self.headers.get("Origin")):
                    raise AppError("cross-origin requests are refused", 403)
                fn()
            except QUIET_ERRORS:
                self.close_connection = True  # the client went away
            except AppError as err:
                self._answer_error(str(err), err.status)
            except FPTPlusError as err:
                self._answer_error(str(err), 400)
            except Exception as err:  # the page gets one line; the console gets the type
                sys.stderr.write(f"app: {type(err).__name__}: {err}\n")
                self._answer_error(f"internal error ({type(err).__name__}: {err})", 500)

        def _answer_error(self, message: str, status: int) -> None:
            try:
                self._json({"error": message}, status)
            except QUIET_ERRORS:
                self.close_connection = True

        def do_GET(self) -> None:
            self._guard(self._get)

        def do_POST(self) -> None:
            self._guard(self._post)

        def _get(self) -> None:
            url = urlparse(self.path)
            q = parse_qs(url.query)
            if url.path in ("/", "/index.html"):
                self._send(200, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path.lstrip("/") in ASSETS:
                body, kind = ASSETS[url.path.lstrip("/")]
                self._send(200, body, kind)
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
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self.close_connection = True
                raise AppError("Content-Length must be a number of bytes") from None
            if length > max_upload:
                self.close_connection = True  # the body is not read
                raise AppError(f"the file is {length / 2**20:.1f} MiB; this app accepts up to "
                               f"{max_upload / 2**20:.0f} MiB (fptplus app --max-upload-mb)", 413)  # fmt: skip
            if length <= 0:
                raise AppError("empty upload")
            data = self.rfile.read(length)
            if len(data) < length:
                self.close_connection = True
                raise AppError("the upload ended early (connection closed)")
            name = parse_qs(url.query).get("name", ["upload"])[0]
            self._json(service.predict_bytes(data, name))

    return Handler


class AppServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a real listen backlog, a cap on connections served at once (the next ones get a
    503 at once instead of a reset), and one-line console notes instead of tracebacks."""

    request_queue_size = 128
    daemon_threads = True

    def __init__(self, address, handler, max_handlers: int = MAX_HANDLERS) -> None:
        self.slots = threading.BoundedSemaphore(max_handlers)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                body = b'{"error": "the app is busy; try again in a moment"}'
                head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                request.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, QUIET_ERRORS):
            return  # a client that disconnected or stayed silent
        sys.stderr.write(f"app: {client_address[0]}: {type(err).__name__}: {err}\n")


def serve(service: AppService, host: str = "127.0.0.1", port: int = 7860, max_upload: int = 64 * 2**20,
          quiet: bool = False, allowed_hosts: tuple[str, ...] = ()) -> AppServer:  # fmt: skip
    """A started-but-not-running server (call `serve_forever`; port 0 picks a free one: `server.server_port`).

    A port in use, out of range or a host that does not resolve is a ConfigError naming it.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    try:
        server = AppServer((host, port), make_handler(service, max_upload, quiet))
    except socket.gaierror as err:
        raise ConfigError(f"--host {host!r} is not an address of this machine ({err.strerror}); use 127.0.0.1, "
                          "0.0.0.0 or a name that resolves here") from None  # fmt: skip
    except OSError as err:
        if err.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
            raise ConfigError(f"port {port} on {host} is already in use (another `fptplus app`?); pass --port with "
                              "another number, or --port 0 for any free one") from None  # fmt: skip
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    hosts = AllowedHosts(host, server.server_port, allowed_hosts)
    server.RequestHandlerClass = make_handler(service, max_upload, quiet, hosts)
    return server
