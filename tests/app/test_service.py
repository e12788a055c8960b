"""The app's request handlers without a browser: predictions equal `predict`, overlays re-render, the split browser
filters like the predictions table says, bad input is a message (never a stack trace), nothing is written."""

from __future__ import annotations

import csv
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from fptplus.app import AppService, serve
from fptplus.cli import main
from fptplus.trainer.evaluate import predict
from imagegen import make_dicom
from runhelp import trained_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def server(run):
    service = AppService(run)
    httpd = serve(service, port=0, max_upload=200_000, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", service
    httpd.shutdown()
    httpd.server_close()


def call(url, data=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data else "GET")) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def snapshot(folder):
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())


def test_prediction_equals_predict_and_overlays_rerender(server, run, tmp_path):
    url, _ = server
    before = snapshot(run)
    image = run.parent / "data" / "pos" / "img3.png"
    status, body = call(f"{url}/api/predict?name=img3.png", image.read_bytes())
    assert status == 200
    out = json.loads(body)
    ref = predict(run, [image], num_workers=0).rows[0]
    assert out["probabilities"] == pytest.approx({"neg": ref["prob_neg"], "pos": ref["prob_pos"]}, abs=1e-5)
    threshold = json.loads((run / "calibration.json").read_text())["threshold"]["value"]
    assert out["threshold"] == pytest.approx(threshold)
    assert out["prediction"] == ("pos" if out["probabilities"]["pos"] >= threshold else "neg")
    ex = out["explain"]
    assert ex["head"] is None and ex["tokens"].startswith("data:image/png;base64,")
    status, body = call(f"{url}/api/explain?id={out['id']}&layer={ex['layer']}&head=1&prompt=2")
    again = json.loads(body)
    assert status == 200 and again["head"] == 1 and again["prompt"] == 2 and again["tokens"] != ex["tokens"]
    status, body = call(f"{url}/api/explain?id={out['id']}&head=99")
    assert status == 400 and "head must be in 0..3" in json.loads(body)["error"]
    dicom = make_dicom(tmp_path / "x.dcm", np.random.default_rng(0).integers(0, 4096, (40, 40)))
    status, body = call(f"{url}/api/predict?name=x.dcm", dicom.read_bytes())
    assert status == 200 and json.loads(body)["prediction"] in ("neg", "pos")
    assert snapshot(run) == before  # nothing written into the run (nor anywhere: uploads stay in memory)


def test_bad_input_is_a_message(server):
    url, _ = server
    status, body = call(f"{url}/api/predict?name=broken.png", b"\x89PNG\r\n\x1a\nbroken")
    assert status == 400 and "broken.png" in json.loads(body)["error"]
    status, body = call(f"{url}/api/predict?name=big.png", b"0" * 300_000)
    assert status == 413 and "accepts up to" in json.loads(body)["error"]
    bad = [
        ("/api/explain?id=gone", 404),
        ("/api/split?name=train", 400),
        ("/api/plot/../../etc/passwd", 404),
        ("/api/plot/config.yaml", 404),
        ("/nothing", 404),
        ("/api/sample?split=test&path=nope.png", 404),
    ]
    for path, code in bad:
        status, body = call(url + path)
        assert status == code and "error" in json.loads(body), path
    status, body = call(url + "/")
    assert status == 200 and b"<html" in body and b"Traceback" not in body


def test_split_browser_matches_the_predictions_table(server, run):
    url, service = server
    with open(run / "predictions_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    t = service.threshold
    pred = ["pos" if float(r["p_pos"]) >= t else "neg" for r in rows]
    fp = [r["path"] for r, p in zip(rows, pred, strict=True) if p == "pos" and r["label"] == "neg"]
    fn = [r["path"] for r, p in zip(rows, pred, strict=True) if p == "neg" and r["label"] == "pos"]
    for show, expected in (("fp", fp), ("fn", fn), ("errors", fp + fn)):
        got = json.loads(call(f"{url}/api/split?name=test&show={show}")[1])
        assert sorted(r["path"] for r in got["rows"]) == sorted(expected)
    everything = json.loads(call(f"{url}/api/split?name=test")[1])["rows"]
    assert len(everything) == len(rows)
    conf = [r["confidence"] for r in everything]
    assert conf == sorted(conf, reverse=True)
    status, body = call(f"{url}/api/sample?split=test&path={everything[0]['path']}")
    sample = json.loads(body)
    assert status == 200 and sample["label"] == everything[0]["label"]
    assert sample["probabilities"] == pytest.approx(everything[0]["probabilities"], abs=2e-4)  # store vs online
    info = json.loads(call(f"{url}/api/info")[1])
    assert info["layers"] and info["heads"] == 4 and "roc_test.png" in info["plots"]
    status, body = call(f"{url}/api/plot/roc_test.png")
    assert status == 200 and body[:4] == b"\x89PNG"


def test_a_wrong_run_folder_is_refused_before_serving(tmp_path, capsys):
    assert main(["app", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
