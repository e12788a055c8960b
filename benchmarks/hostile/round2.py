"""Round two of the hostile inputs (issues 30 and 32): diverged runs, damaged store contents, --overwrite next to
another tool's files, outputs aimed at a run, header and YAML tricks, inflation bombs, live runs, stale images whose
mtime was restored, damaged prediction tables, app start-up mistakes and load, and a failed run's retry.

Registered into `run.py`'s table by `add_cases`; every case runs the real command line in a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np


def add_cases(case, dataset, image, fp_cls) -> None:
    """Registers the round-two cases with `run.py`'s `case` decorator and helpers."""

    def trained(fp, w: Path, *extra: str) -> tuple[Path, Path]:
        data, run = dataset(w / "data", 6), w / "run"
        r = fp.train(data, run, *extra)
        assert r.rc == 0, r.err[-500:]
        return data, run

    @case("diverged-lr", "`--lr 300`: the model diverges to NaN", "train --lr 300")
    def diverged(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        r = fp.train(data, w / "run", "--lr", "300", "--epochs", "2")
        if r.rc:
            return r.seen()
        res = json.loads((w / "run" / "results.json").read_text())
        return f"rc 0: test AUC {100 * res['test']['auc']:.2f} reported, a NaN model kept as best"

    @case("lr-inf-yaml", "`lr: .inf` in the run's YAML", "train --config run.yaml")
    def lr_inf(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        (w / "run.yaml").write_text("method: fpt_plus\ntrain:\n  lr: .inf\n")
        r = fp.train(data, w / "run", "--config", w / "run.yaml")
        return r.seen() if r.rc else "rc 0: trained with an infinite learning rate"

    def _damage_store(fp, w: Path, damage) -> str:
        _, run = trained(fp, w)
        before = json.loads((run / "results.json").read_text())["test"]["auc"]
        damage(run / "store")
        r = fp("evaluate", run)
        if r.rc:
            return r.seen()
        after = json.loads((run / "eval-test-best.json").read_text())["auc"]
        return f"rc 0: evaluated silently, test AUC {100 * after:.2f} (before the damage {100 * before:.2f})"

    def nan_keys(store: Path) -> None:
        for f in store.glob("*.keys.npy"):
            a = np.load(f, mmap_mode="r+")
            a[:] = np.nan
            a.flush()

    def permute_values(store: Path) -> None:
        for f in store.glob("*.values.npy"):
            a = np.load(f, mmap_mode="r+")
            a[:] = a[::-1].copy()
            a.flush()

    def indices_out_of_range(store: Path) -> None:
        import hashlib

        manifest = json.loads((store / "manifest.json").read_text())
        for s, f in enumerate(sorted(store.glob("*.indices.npy"))):
            a = np.load(f, mmap_mode="r+")
            a[:] = 999  # every row: evaluate reads only the test rows (row 0 alone went unread, hence unnoticed)
            a.flush()
            manifest["shards"][s]["sha256"]["indices"] = hashlib.sha256(f.read_bytes()).hexdigest()  # as if so written
        (store / "manifest.json").write_text(json.dumps(manifest))

    @case("nan-store", "every stored key set to NaN after training", "evaluate RUN")
    def nan_store(fp, w: Path) -> str:
        return _damage_store(fp, w, nan_keys)

    @case("permuted-values", "the stored values shard permuted (rows reversed)", "evaluate RUN")
    def permuted(fp, w: Path) -> str:
        return _damage_store(fp, w, permute_values)

    @case("indices-out-of-range", "token indices 999 (of 17) with the manifest's hash updated", "evaluate RUN")
    def out_of_range(fp, w: Path) -> str:
        return _damage_store(fp, w, indices_out_of_range)

    @case("overwrite-other-tool", "`--out` another tool's run: config.yaml, checkpoints/, seed-42/, tensorboard/",
          "train --out F --overwrite")  # fmt: skip
    def other_tool(fp, w: Path) -> str:
        data, out = dataset(w / "data", 6), w / "resnet"
        files = {"config.yaml": "lr: 0.1\n", "checkpoints/resnet50_epoch90.pt": "weights",
                 "seed-42/notes.txt": "notes", "tensorboard/events.out": "events"}  # fmt: skip
        for rel, text in files.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(text)
        r = fp.train(data, out, "--overwrite")
        gone = [rel for rel, text in files.items() if not (out / rel).exists() or (out / rel).read_text() != text]
        return f"{r.seen()}; " + (f"deleted or replaced: {', '.join(gone)}" if gone else "all 4 files intact")

    def _predict_out(fp, w: Path, target_of) -> str:
        _, run = trained(fp, w)
        target = target_of(run, w)
        before = target.read_bytes() if target.is_file() else None
        r = fp("predict", run, w / "data" / "neg", "--out", target, "--num-workers", "0")
        after = target.read_bytes() if target.is_file() else None
        effect = "" if before == after or before is None else "; the file was REPLACED"
        return f"{r.seen()}{effect}"

    @case("predict-out-results", "`predict --out RUN/results.json`", "predict RUN imgs/ --out RUN/results.json")
    def predict_results(fp, w: Path) -> str:
        return _predict_out(fp, w, lambda run, w: run / "results.json")

    @case("predict-out-checkpoint", "`predict --out` a checkpoint's model.safetensors",
          "predict RUN imgs/ --out RUN/checkpoints/last/model.safetensors")  # fmt: skip
    def predict_ckpt(fp, w: Path) -> str:
        return _predict_out(fp, w, lambda run, w: run / "checkpoints" / "last" / "model.safetensors")

    @case(
        "predict-out-existing", "`predict --out p.csv` where the user's p.csv exists", "predict RUN imgs/ --out p.csv"
    )
    def predict_existing(fp, w: Path) -> str:
        (w / "p.csv").write_text("the user's own table\n")
        return _predict_out(fp, w, lambda run, w: w / "p.csv")

    @case("predict-out-missing-folder", "`--out` in a folder that does not exist", "predict RUN imgs/ --out new/p.csv")
    def predict_missing(fp, w: Path) -> str:
        out = _predict_out(fp, w, lambda run, w: w / "new" / "p.csv")
        return out + ("; new/p.csv written" if (w / "new" / "p.csv").exists() else "")

    @case("predict-out-folder", "`--out` an existing folder", "predict RUN imgs/ --out somefolder")
    def predict_folder(fp, w: Path) -> str:
        (w / "somefolder").mkdir()
        return _predict_out(fp, w, lambda run, w: w / "somefolder")

    @case(
        "predict-out-under-file", "`--out` below a file (`notes.txt/p.csv`)", "predict RUN imgs/ --out notes.txt/p.csv"
    )
    def predict_under_file(fp, w: Path) -> str:
        (w / "notes.txt").write_text("x")
        return _predict_out(fp, w, lambda run, w: w / "notes.txt" / "p.csv")

    def _csv(fp, w: Path, header: str, extra: bytes = b"") -> str:
        data = dataset(w / "data", 6)
        rows = [f"{p.relative_to(data).as_posix()},{p.parent.name},{'pos' if p.parent.name == 'neg' else 'neg'}"
                for p in sorted(data.rglob("*.png"))]  # fmt: skip
        (data / "labels.csv").write_bytes((header + "\n" + "\n".join(rows) + "\n").encode() + extra)
        r = fp.preload(data / "labels.csv", w / "store")
        if r.rc:
            return r.seen()
        samples = json.loads((w / "store" / "manifest.json").read_text())["samples"]
        flipped = sum(1 for s in samples if ("/pos/" in s["path"] or s["path"].startswith("pos/")) == (s["label"] == 0))
        return f"rc 0, silently: {len(samples)} samples, {flipped} with the second label column's (inverted) label"

    @case("csv-dup-header", "labels.csv with the header `path,label,label` (the 2nd column inverted)", "preload")
    def dup_header(fp, w: Path) -> str:
        return _csv(fp, w, "path,label,label")

    @case("csv-nul", "a NUL byte inside labels.csv", "preload --data labels.csv")
    def csv_nul(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        rows = [f"{p.relative_to(data).as_posix()},{p.parent.name}" for p in sorted(data.rglob("*.png"))]
        rows[3] = rows[3].replace(".png", "\x00.png")
        (data / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
        return fp.preload(data / "labels.csv", w / "store").seen()

    @case("dicom-deflate-bomb", "a 1.5 MB DICOM whose deflated dataset inflates to 1.5 GiB", "predict RUN bomb.dcm")
    def dicom_bomb(fp, w: Path) -> str:
        import pydicom
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

        _, run = trained(fp, w)
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.zeros((32, 32), np.uint16).tobytes()
        ds.add_new((0x0009, 0x0010), "LO", "BOMB")
        ds.add_new((0x0009, 0x1000), "OB", bytes(1536 * 2**20))
        ds.save_as(w / "bomb.dcm", enforce_file_format=True)
        del ds
        size = (w / "bomb.dcm").stat().st_size / 2**20
        r = fp("predict", run, w / "bomb.dcm", "--num-workers", "0")
        return f"{r.seen()}; file {size:.1f} MB, peak RSS {r.rss_mb:,.0f} MB"

    @case(
        "zip-member-bomb",
        "a zip of the images plus a 1 GiB member (`pos/big.png`, 1.7 MB zipped)",
        "preload --data D.zip",
    )
    def zip_bomb(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        with zipfile.ZipFile(w / "data.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(data.rglob("*.png")):
                zf.write(p, p.relative_to(data).as_posix())
            with zf.open("pos/big.png", "w", force_zip64=True) as member:
                block = bytes(2**20)
                for _ in range(1024):
                    member.write(block)
        r = fp.preload(w / "data.zip", w / "store")
        return f"{r.seen()}; peak RSS {r.rss_mb:,.0f} MB, {r.seconds:.1f} s"

    @case("yaml-bomb", "a 1.4 KB YAML whose nested anchors expand `data.label_columns` to 10^9 items",
          "train --config bomb.yaml (stopped after 60 s)")  # fmt: skip
    def yaml_bomb(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
        (w / "bomb.yaml").write_text("\n".join(lines) + "\nmethod: fpt_plus\ndata:\n  label_columns: *a8\n")
        proc = fp.train(data, w / "run", "--config", w / "bomb.yaml", wait=False)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            fp_cls.stop(proc)
            proc.communicate()
            return "still running after 60 s (killed), memory growing"
        last = [line for line in err.splitlines() if line.strip()][-1:] or [""]
        return f"rc {proc.returncode}: {last[0][:300]}"

    @case("yaml-dup-keys", "a run YAML with `lr:` twice (0.001, then 0.1)", "train --config run.yaml")
    def yaml_dup(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        (w / "run.yaml").write_text("method: fpt_plus\ntrain:\n  lr: 0.001\n  epochs: 1\n  lr: 0.1\n")
        r = fp.train(data, w / "run", "--config", w / "run.yaml")
        if r.rc:
            return r.seen()
        lr = [line for line in (w / "run" / "config.yaml").read_text().splitlines() if line.strip().startswith("lr:")]
        return f"rc 0, silently: {lr[0].strip()} used"

    def _while_training(fp, w: Path, *second: str) -> str:
        data = dataset(w / "data", 6)
        first = fp.train(data, w / "run", "--epochs", "200", wait=False)
        deadline = time.monotonic() + 120
        while not (w / "run" / "checkpoints" / "last").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        r = fp(*[a if a != "DATA" else data for a in second], w / "run") if second[0] == "train" else None
        alive = first.poll() is None
        fp_cls.stop(first)
        _, err = first.communicate()
        crashed = "Traceback" in err
        state = "the first run was still training" if alive else ("the first run CRASHED: " + (
            err.strip().splitlines()[-1][:160] if crashed else "it stopped"))  # fmt: skip
        return f"{r.seen()}; {state}"

    @case("resume-while-training", "`train --resume RUN` while another process trains RUN", "train --resume RUN")
    def resume_live(fp, w: Path) -> str:
        return _while_training(fp, w, "train", "--resume")

    @case("overwrite-while-training", "`train --overwrite` into a RUN another process is training",
          "train --data D --out RUN --overwrite")  # fmt: skip
    def overwrite_live(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        first = fp.train(data, w / "run", "--epochs", "200", wait=False)
        deadline = time.monotonic() + 120
        while not (w / "run" / "checkpoints" / "last").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        r = fp.train(data, w / "run", "--overwrite", "--epochs", "1")
        time.sleep(2)
        alive = first.poll() is None
        fp_cls.stop(first)
        _, err = first.communicate()
        if alive:
            state = "the first run kept training"
        else:
            tail = err.strip().splitlines()[-1][:160] if err.strip() else "no message"
            state = f"the first run died: {tail}"
        return f"{r.seen()}; {state}"

    @case("stale-mtime-restored", "an image replaced by another of the same size, its mtime restored (`touch -r`)",
          "train --store S (existing store)")  # fmt: skip
    def stale_restored(fp, w: Path) -> str:
        data = dataset(w / "data", 6, ext=".bmp")
        assert fp.preload(data, w / "store").rc == 0
        target = data / "pos" / "img2.bmp"
        st = target.stat()
        time.sleep(0.05)
        image(w / "other.bmp", 4242, fmt="BMP")
        os.replace(w / "other.bmp", target)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        r = fp.train(data, w / "run", "--store", w / "store")
        return r.seen() if r.rc else "rc 0, silently trained on the old image's features"

    @case("compare-damaged", "one run's predictions_test.csv cut in the middle of a row", "compare RUN_A RUN_B")
    def compare_damaged(fp, w: Path) -> str:
        data, a = trained(fp, w)
        b = w / "run-b"
        assert fp.train(data, b, "--lr", "0.01").rc == 0
        path = a / "predictions_test.csv"
        text = path.read_text()
        path.write_text(text[: len(text) * 2 // 3])
        return fp("compare", a, b).seen()

    def _app(fp, w: Path, *args: str) -> str:
        _, run = trained(fp, w)
        proc = fp("app", run, *args, wait=False)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            fp_cls.stop(proc)
            return "still serving after 60 s"
        lines = [line for line in err.splitlines() if line.strip()]
        if "Traceback" in err:
            return f"rc {proc.returncode} (traceback): {lines[-1][:200]}"
        return f"rc {proc.returncode}: {lines[-1][:200] if lines else out.strip()[:200]}"

    @case("app-busy-port", "`fptplus app` on a port another program holds", "app RUN --port P")
    def app_busy(fp, w: Path) -> str:
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        try:
            return _app(fp, w, "--port", str(holder.getsockname()[1]))
        finally:
            holder.close()

    @case("app-port-range", "`--port 70000`", "app RUN --port 70000")
    def app_range(fp, w: Path) -> str:
        return _app(fp, w, "--port", "70000")

    @case("app-unknown-host", "`--host no-such-host.invalid`", "app RUN --host no-such-host.invalid")
    def app_host(fp, w: Path) -> str:
        return _app(fp, w, "--host", "no-such-host.invalid", "--port", "0")

    @case("app-load", "50 simultaneous uploads, then a request with a foreign Host header", "app RUN; 50 × POST")
    def app_load(fp, w: Path) -> str:
        _, run = trained(fp, w)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        proc = fp("app", run, "--port", str(port), "--quiet-requests", wait=False)
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/api/info", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        body = (w / "data" / "neg" / "img0.png").read_bytes()
        results: list[str] = []

        def upload(i: int) -> None:
            try:
                req = urllib.request.Request(f"{url}/api/predict?name=u{i}.png", data=body, method="POST")
                urllib.request.urlopen(req, timeout=120).read()
                results.append("ok")
            except Exception as err:
                results.append(type(err).__name__ + ": " + str(getattr(err, "reason", err))[:40])

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        foreign = urllib.request.Request(url + "/api/split?name=test", headers={"Host": "evil.example"})
        try:
            urllib.request.urlopen(foreign, timeout=10).read()
            host = "a foreign Host header is served"
        except urllib.error.HTTPError as err:
            host = f"a foreign Host header gets {err.code}"
        fp_cls.stop(proc)
        _, err = proc.communicate()
        ok = results.count("ok")
        failures = sorted({r for r in results if r != "ok"})
        tb = "; tracebacks in the console" if "Traceback" in err else ""
        return f"{ok}/50 uploads answered" + (f" (others: {', '.join(failures[:2])})" if failures else "") + \
            f"; {host}{tb}"  # fmt: skip

    @case("failed-then-fixed", "a wrong `--data` path, then the corrected command into the same `--out`",
          "train --data WRONG --out R; train --data D --out R")  # fmt: skip
    def failed_then_fixed(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        first = fp.train(w / "no-such-data", w / "run")
        second = fp.train(data, w / "run")
        return f"first {first.seen()[:80]}…; the corrected command: {second.seen() if second.rc else 'rc 0, trained'}"

    @case("same-command-continues", "a run killed during its second epoch, then the same command again",
          "train ×2 (the first killed)")  # fmt: skip
    def same_command(fp, w: Path) -> str:
        data = dataset(w / "data", 6)
        first = fp.train(data, w / "run", "--epochs", "3", env={"FPTPLUS_TEST_CRASH": "train-step:4"})
        second = fp.train(data, w / "run", "--epochs", "3")
        said = "continuing" if "continuing the interrupted run" in second.out + second.err else ""
        done = "rc 0, finished" + (f" ({said})" if said else "") if second.rc == 0 else second.seen()
        return f"first {first.seen()[:40]}; the same command: {done}"

    _ = (shutil, sys, fp_cls)  # imported for the cases' helpers
