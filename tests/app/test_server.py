"""The app's server under hostile or heavy use: foreign Host / Origin, malformed headers, 50 uploads at once, idle and
vanishing clients, no inline script, and refusals to start that name the problem."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from fptplus.app import AppService, serve
from fptplus.app import server as server_mod
from fptplus.app.page import PAGE
from fptplus.errors import ConfigError
from runhelp import trained_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("srv"))


@pytest.fixture(scope="module")
def server(run):
    httpd = serve(AppService(run, decision="argmax"), port=0, max_upload=500_000, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def png_bytes(seed=0):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def test_foreign_host_and_cross_origin_requests_are_refused(server):
    status, _, body = request(server, "GET", "/api/split?name=test", headers={"Host": "evil.example:80"})
    assert status == 403 and "Host header refused" in json.loads(body)["error"]  # DNS rebinding
    status, _, body = request(server, "POST", "/api/predict?name=a.png", png_bytes(),
                              {"Origin": "http://evil.example", "Content-Type": "image/png"})  # fmt: skip
    assert status == 403 and "cross-origin" in json.loads(body)["error"]
    port = server.server_port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        status, _, _ = request(server, "POST", "/api/predict?name=a.png", png_bytes(),
                               {"Host": host, "Origin": f"http://{host}"})  # fmt: skip
        assert status == 200


def test_every_answer_carries_a_policy_and_the_page_has_no_inline_script(server):
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in PAGE and 'src="/app.js"' in PAGE and "<style>" not in PAGE and "style=" not in PAGE
    for asset, kind in (("/app.js", "text/javascript"), ("/app.css", "text/css")):
        status, headers, body = request(server, "GET", asset)
        assert status == 200 and headers["Content-Type"].startswith(kind) and body
    js = request(server, "GET", "/app.js")[2].decode()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "outerHTML" not in js
    status, headers, _ = request(server, "GET", "/api/nothing")
    assert status == 404 and "Content-Security-Policy" in headers


def test_malformed_headers_are_a_400_not_a_500(server):
    status, _, body = request(server, "POST", "/api/predict?name=a.png", b"xx", {"Content-Length": "2x"})
    assert status == 400 and "Content-Length" in json.loads(body)["error"]
    s = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
    s.sendall(b"GET / HTTP/1.1 and more\r\n\r\n")  # an unparsable request line
    reply = s.recv(4096)
    s.close()
    assert b"bad request" in reply and b"Traceback" not in reply


def test_fifty_simultaneous_uploads_are_all_answered(server):
    data = [png_bytes(i) for i in range(50)]

    def post(i):
        return request(server, "POST", f"/api/predict?name=u{i}.png", data[i])[0]

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(post, range(50)))
    assert statuses == [200] * 50


def test_idle_and_vanishing_clients_leave_no_trace(run, monkeypatch, capfd):
    monkeypatch.setattr(server_mod, "TIMEOUT", 0.5)
    httpd = serve(AppService(run, decision="argmax"), port=0, max_upload=500_000, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        idle = socket.create_connection(("127.0.0.1", httpd.server_port), timeout=10)
        time.sleep(1.5)
        assert idle.recv(100) == b""  # closed by the server after its timeout
        gone = socket.create_connection(("127.0.0.1", httpd.server_port), timeout=10)
        gone.sendall(b"POST /api/predict?name=a.png HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nxx")
        gone.close()  # the client disappears mid-upload
        time.sleep(1.0)
        assert request(httpd, "GET", "/api/info")[0] == 200  # still serving
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "Traceback" not in capfd.readouterr().err


def test_refusals_to_start_name_the_problem(run, server):
    service = server.RequestHandlerClass  # noqa: F841  (the module server holds its port)
    app = AppService(run, decision="argmax")
    with pytest.raises(ConfigError, match="already in use"):
        serve(app, port=server.server_port)
    with pytest.raises(ConfigError, match=r"0\.\.65535"):
        serve(app, port=70000)
    with pytest.raises(ConfigError, match="not an address of this machine"):
        serve(app, host="no-such-host.invalid", port=0)
