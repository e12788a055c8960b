"""The feature store: round trip, online == stored, resume after kills, refusals, verification, bad files."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fptplus.data.datasets import ImageDataset
from fptplus.data.decode import DecodeError, load_image_file
from fptplus.data.sources import load_index
from fptplus.data.views import Views
from fptplus.lpm import LPMFeatures
from fptplus.store import FeatureStore, PreloadOptions, StoreError, preload
from fptplus.store import plan as plan_mod
from fptplus.store.dataset import StoreDataset
from fptplus.store.plan import store_spec
from imagegen import class_folders, rgb, save
from preload_script import run_preload
from storetools import build, quiet, store_cfg, tiny_weights, tree

from conftest import TINY, build_tiny, tiny_config


@pytest.fixture
def dataset(tmp_path):
    return load_index(class_folders(tmp_path / "data", {"neg": 7, "pos": 7}), seed=0)


def test_round_trip_matches_the_lpm(dataset, tmp_path):
    report = build(dataset, tmp_path / "store", dtype="float32", batch_size=1)
    store = FeatureStore(tmp_path / "store")
    assert report.complete and len(store) == 14 and store.classes == ["neg", "pos"]
    model = build_tiny(store_cfg())
    views = Views(store_spec(store_cfg()).views)
    k = int(0.2 * 17)
    for i in (0, 7, 13):
        rec = store[i]
        assert rec["keys"].shape == (2, 4, k, 8) and rec["keys"].dtype == np.float32
        hr = views.high_res(load_image_file(dataset.abspath(dataset.samples[i])).image)
        feats = model.extract(views.lpm_view(hr)[None])
        assert np.array_equal(rec["keys"], feats.keys[0].numpy())
        assert np.array_equal(rec["values"], feats.values[0].numpy())
        assert np.array_equal(rec["indices"], feats.indices[0].numpy())
        assert np.array_equal(rec["side"], views.side_source(hr).numpy())
    names = [s["path"] for s in store.samples]
    assert "neg/img0.png" in names and "pos/img0.png" in names  # same file name in two classes
    a, b = names.index("neg/img0.png"), names.index("pos/img0.png")
    assert store.samples[a]["sha256"] != store.samples[b]["sha256"]
    assert not np.array_equal(store[a]["keys"], store[b]["keys"])
    assert (tmp_path / "store" / "splits.csv").exists() and not (tmp_path / "store" / "progress").exists()


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("float16", 2e-3), ("int8", 2e-3)])
def test_stored_pooled_features_are_the_final_tokens_of_an_online_forward(dataset, tmp_path, dtype, atol):
    """cls and patch_mean: the final-normed CLS and mean patch token of timm's own forward (float16 rounding)."""
    build(dataset, tmp_path / "store", dtype=dtype, batch_size=3)
    store = FeatureStore(tmp_path / "store")
    assert store.fingerprint["format_version"] == 3 and {"cls", "patch_mean"} <= set(store.fields)
    vit = build_tiny(store_cfg()).lpm.vit
    views = Views(store_spec(store_cfg()).views)
    for i in (0, 5, 13):
        hr = views.high_res(load_image_file(dataset.abspath(dataset.samples[i])).image)
        with torch.no_grad():
            tokens = vit.forward_features(views.lpm_view(hr)[None])[0]  # (1 + 16, D), final norm applied
        rec = store.features(i)
        torch.testing.assert_close(rec["cls"].float(), tokens[0], atol=atol, rtol=atol)
        torch.testing.assert_close(rec["patch_mean"].float(), tokens[1:].mean(0), atol=atol, rtol=atol)


@pytest.mark.parametrize("dtype,atol", [("float32", 0.0), ("float16", 5e-3)])
def test_store_and_online_inputs_give_the_same_outputs(dataset, tmp_path, dtype, atol):
    build(dataset, tmp_path / "store", dtype=dtype, batch_size=1)
    store = FeatureStore(tmp_path / "store")
    views = Views(store_spec(store_cfg()).views)
    idx = store.usable("train")
    offline = StoreDataset(store, idx, views, train=True, seed=4)
    online = ImageDataset(dataset, idx, views, train=True, seed=4)
    offline.set_epoch(3), online.set_epoch(3)
    model = build_tiny(store_cfg()).eval()
    for j in range(3):
        a, b = offline[j], online[j]
        assert a["index"] == b["index"] and a["label"] == b["label"]
        assert torch.equal(a["side"], b["side"])  # identical augmented side views
        stored = LPMFeatures(a["keys"][None], a["values"][None], None)
        with torch.no_grad():
            got = model(a["side"][None], features=stored)
            want = model(b["side"][None], lpm_x=b["lpm"][None])
        torch.testing.assert_close(got, want, atol=atol, rtol=0)


def test_layer_subset_of_a_store(dataset, tmp_path):
    build(dataset, tmp_path / "store")
    store = FeatureStore(tmp_path / "store")
    one = store_cfg(fused_layers=1)
    store.check_compatible(store_spec(one).fingerprint, dataset)
    ds = StoreDataset(store, [0], Views(store_spec(one).views), train=False, layers=(1,))
    assert ds[0]["keys"].shape[0] == 1
    assert torch.equal(ds[0]["keys"][0], torch.from_numpy(store[0]["keys"][1]))


def test_refusals(dataset, tmp_path):
    out = tmp_path / "store"
    build(dataset, out)
    store = FeatureStore(out)
    other = store_cfg(token_ratio=0.5)
    with pytest.raises(StoreError, match=r"(?s)token_ratio: store has 0.2, expected 0.5.*--overwrite"):
        store.check_compatible(store_spec(other).fingerprint, dataset)
    with pytest.raises(StoreError, match="different complete store"):
        build(dataset, out, cfg=other)
    with pytest.raises(StoreError, match="weights: store has"):
        store.check_compatible(store_spec(tiny_config(num_classes=2)).fingerprint, dataset)  # random init
    fewer = load_index(dataset.root, seed=0)
    fewer.samples = fewer.samples[1:]
    with pytest.raises(StoreError, match="1 store samples are not in the dataset"):
        store.check_compatible(store_spec(store_cfg()).fingerprint, fewer)
    img = dataset.abspath(dataset.samples[3])
    img.write_bytes(img.read_bytes() + b"\0")
    with pytest.raises(StoreError, match="changed since preloading"):
        store.check_compatible(store_spec(store_cfg()).fingerprint, dataset)
    assert any("changed since preloading" in p for p in store.verify(dataset, log=quiet))
    rebuilt = build(dataset, out, overwrite=True)
    assert rebuilt.processed == 14


def test_never_touches_a_foreign_folder_and_overwrite_removes_only_store_files(dataset, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(StoreError, match="not a feature store"):
        build(dataset, foreign, overwrite=True)
    out = tmp_path / "store"
    build(dataset, out)
    (out / "notes.txt").write_text("keep me")
    build(dataset, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me" and (foreign / "thesis.docx").exists()


def test_unfinished_store_is_not_readable(dataset, tmp_path):
    out = tmp_path / "store"
    build(dataset, out)
    (out / "manifest.json").unlink()
    with pytest.raises(StoreError, match="unfinished feature store"):
        FeatureStore(out)
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path)


def test_truncated_or_corrupt_shard_is_reported_never_read_as_zeros(dataset, tmp_path):
    out = tmp_path / "store"
    build(dataset, out)
    keys = out / "shard-00000.keys.npy"
    data = keys.read_bytes()
    keys.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="missing or damaged"):
        FeatureStore(out)[0]
    problems = FeatureStore(out).verify(log=quiet)
    assert any("shard-00000.keys.npy" in p and "hash" in p for p in problems)
    keys.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, one flipped byte
    assert any("content hash differs" in p for p in FeatureStore(out).verify(log=quiet))
    keys.write_bytes(data)
    assert FeatureStore(out).verify(dataset, log=quiet) == []


def test_disk_space_checked_up_front(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(plan_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StoreError, match=r"not enough disk space .* needs \d+\.\d KiB more, 1000 B free"):
        build(dataset, tmp_path / "store")
    assert not list((tmp_path / "store").glob("shard-*"))


def test_bad_files_listed_then_skipped_or_retried(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 5, "pos": 5})
    (root / "neg" / "img1.png").write_text("not an image")
    good = (root / "pos" / "img2.png").read_bytes()
    (root / "pos" / "img2.png").write_bytes(good[:100])
    index = load_index(root, seed=0)
    out = tmp_path / "store"
    with pytest.raises(DecodeError, match=r"(?s)2 of 10 images could not be decoded.*neg/img1\.png.*pos/img2\.png"):
        build(index, out)
    report = build(index, out, skip_bad=True)  # resumes: nothing recomputed, bad files skipped
    assert report.processed == 0 and {s["path"] for s in report.skipped} == {"neg/img1.png", "pos/img2.png"}
    with open(out / "skipped.csv") as f:
        assert {r["path"] for r in csv.DictReader(f)} == {"neg/img1.png", "pos/img2.png"}
    store = FeatureStore(out)
    assert len(store.usable()) == 8
    with pytest.raises(StoreError, match="skipped at preload"):
        store[[s["path"] for s in store.samples].index("neg/img1.png")]
    fixed = tmp_path / "fixed"
    with pytest.raises(DecodeError):
        build(index, fixed)
    (root / "pos" / "img2.png").write_bytes(good)
    save(root / "neg" / "img1.png", rgb(seed=99))
    index = load_index(root, seed=0)
    report = build(index, fixed)  # the failed samples are retried
    assert report.processed == 2 and not report.skipped and len(FeatureStore(fixed).usable()) == 10


def test_explicit_ranks_write_disjoint_shards(dataset, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    build(dataset, single, shard_mb=40_000 / 2**20)
    assert FeatureStore(single).manifest["num_shards"] > 2
    opts = PreloadOptions(num_workers=0, batch_size=3, shard_mb=40_000 / 2**20)
    with pytest.raises(StoreError, match="is not finished"):  # rank 0 alone cannot finish
        preload(dataset, store_cfg(), multi, opts, rank=0, world_size=2, log=quiet)
    r1 = preload(dataset, store_cfg(), multi, opts, rank=1, world_size=2, log=quiet)
    assert not r1.complete
    preload(dataset, store_cfg(), multi, opts, rank=0, world_size=2, log=quiet)
    assert tree(single) == tree(multi)


# --- resume after kills (separate processes) ---------------------------------------------------------------


def run_script(data, out, shard_bytes, crash=None):
    return run_preload(data, out, tiny_weights(), shard_bytes, crash)


def test_resume_after_kills_is_byte_identical(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 6, "pos": 6})
    ref, out = tmp_path / "ref", tmp_path / "out"
    build(load_index(root, seed=0), ref, batch_size=2, shard_mb=60_000 / 2**20)
    for crash in ("preload-written:1", "preload-committed:2", "preload-committed:1", "preload-written:3"):
        proc = run_script(root, out, 60_000, crash)
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
        assert not (out / "manifest.json").exists()
    proc = run_script(root, out, 60_000)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    assert tree(out) == tree(ref)


def test_resume_after_a_real_sigkill_at_a_random_moment(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 20, "pos": 20}, size=(64, 64))
    ref, out = tmp_path / "ref", tmp_path / "out"
    build(load_index(root, seed=0), ref, batch_size=2, shard_mb=100_000 / 2**20)
    proc = run_script(root, out, 100_000)
    deadline = time.time() + 60
    while not (out / "progress").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc = run_script(root, out, 100_000)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    assert tree(out) == tree(ref)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def cli_args(data, out, *extra):
    kwargs = "backbone_kwargs=" + repr(TINY)
    return ["preload", "--data", str(data), "--out", str(out), "--img-size", "64", "--side-img-size", "32",
            "--set", kwargs, "--set", "side_depth=2", "--set", "reduction=2", "--set", "num_prompts=4",
            "--weights", str(tiny_weights()), "--batch-size", "2", "--workers", "0", *extra]  # fmt: skip


def test_torchrun_two_processes_equal_one(tmp_path):
    """Two processes write disjoint shards of the same store, byte-identical to one process.

    Float results depend on the BLAS thread count, so both runs use one thread per process.
    """
    root = class_folders(tmp_path / "data", {"neg": 5, "pos": 5})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for procs in ("1", "2"):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", procs]
        cmd = [*torchrun, "-m", "fptplus.cli", *cli_args(root, tmp_path / procs, "--shard-mb", "0.03")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preload [rank 1]" in proc.stdout and FeatureStore(tmp_path / "2").manifest["num_shards"] >= 2
    assert tree(tmp_path / "2") == tree(tmp_path / "1")


def test_cli_preload_and_verify(tmp_path, capsys):
    from fptplus.cli import main

    root = class_folders(tmp_path / "data", {"neg": 4, "pos": 4})
    out = tmp_path / "store"
    assert main(cli_args(root, out)) == 0
    text = capsys.readouterr().out
    assert "8 images, 2 classes" in text and "8 processed" in text
    assert main([*cli_args(root, out), "--verify"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main([*cli_args(root, out), "--set", "token_ratio=0.5"]) == 2
    assert "different complete store" in capsys.readouterr().err


# --- stale images, damaged records, full disks -------------------------------------------------------------


def test_an_image_edited_in_place_with_the_same_size_is_detected(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 4, "pos": 4}, ext=".bmp")  # BMP: the size never changes
    index = load_index(root, seed=0)
    out = tmp_path / "store"
    build(index, out)
    store = FeatureStore(out)
    fingerprint = store_spec(store_cfg()).fingerprint
    edited = root / "pos" / "img2.bmp"
    original = edited.read_bytes()
    save(edited, rgb(seed=123))  # new pixels, same dimensions
    assert edited.stat().st_size == len(original)
    with pytest.raises(StoreError, match=r"image files changed since preloading \(1; .*pos/img2\.bmp"):
        store.check_compatible(fingerprint, index)
    with pytest.raises(
        StoreError, match=r"complete store .* no longer matches its images \(image files changed since preloading"
    ):
        build(index, out)  # `preload` on the complete store refuses too, instead of saying "nothing to do"
    edited.write_bytes(original)
    os.utime(root / "neg" / "img0.bmp", ns=(1, 1))  # touched (e.g. copied without -p): re-hashed, unchanged
    store.check_compatible(fingerprint, index)
    assert build(index, out).processed == 0


def test_a_same_size_replacement_with_its_mtime_restored_is_detected(tmp_path, monkeypatch):
    """`cp other.bmp img2.bmp; touch -r backup img2.bmp`: size and mtime as recorded, but ctime/inode moved."""
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    root = class_folders(tmp_path / "data", {"neg": 4, "pos": 4}, ext=".bmp")
    index = load_index(root, seed=0)
    build(index, tmp_path / "store")
    store = FeatureStore(tmp_path / "store")
    fingerprint = store_spec(store_cfg()).fingerprint
    target = root / "pos" / "img2.bmp"
    st = target.stat()
    time.sleep(0.01)
    save(target, rgb(seed=321))  # in place: same inode, new ctime
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime set back
    assert target.stat().st_mtime_ns == st.st_mtime_ns and target.stat().st_size == st.st_size
    with pytest.raises(StoreError, match=r"pos/img2\.bmp"):
        store.check_compatible(fingerprint, index)
    replaced = root / "neg" / "img1.bmp"  # replaced by another file (new inode), mtime restored
    st = replaced.stat()
    other = tmp_path / "other.bmp"
    save(other, rgb(seed=7))
    os.replace(other, replaced)
    os.utime(replaced, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(StoreError, match=r"neg/img1\.bmp"):
        store.check_compatible(fingerprint, index)


def test_a_copied_dataset_is_read_once_then_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    root = class_folders(tmp_path / "data", {"neg": 3, "pos": 3}, ext=".bmp")
    build(load_index(root, seed=0), tmp_path / "store")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)  # new inodes and ctimes (copytree keeps the mtimes)
    store = FeatureStore(tmp_path / "store")
    index = load_index(copy, seed=0)
    reads = []
    original = plan_mod.changed_images.__globals__["_sha256"]
    monkeypatch.setitem(plan_mod.changed_images.__globals__, "_sha256", lambda i, p: reads.append(p) or original(i, p))
    assert plan_mod.changed_images(store.samples, index) == []
    assert len(reads) == 6  # each re-hashed once ...
    assert plan_mod.changed_images(store.samples, index) == [] and len(reads) == 6  # ... then trusted


def test_a_damaged_manifest_is_one_clear_error(dataset, tmp_path):
    out = tmp_path / "store"
    build(dataset, out)
    good = (out / "manifest.json").read_bytes()
    manifest = json.loads(good)
    cases = {
        "not UTF-8": good.replace(b'"complete"', b'"compl\xe9te"'),
        "not valid JSON": good[: len(good) // 2],
        "missing key 'fields'": json.dumps({k: v for k, v in manifest.items() if k != "fields"}).encode(),
        "'per_shard' should be an integer": json.dumps({**manifest, "per_shard": "many"}).encode(),
        "samples\\[3\\]": json.dumps({**manifest, "samples": [*manifest["samples"][:3], 7]}).encode(),
        "do not add up": json.dumps({**manifest, "shards": []}).encode(),
        "should be an object": b"[]",
    }
    for what, data in cases.items():
        (out / "manifest.json").write_bytes(data)
        for attempt in (lambda: FeatureStore(out), lambda: build(dataset, out)):
            with pytest.raises(StoreError, match=rf"manifest\.json is damaged.*{what}.*--overwrite"):
                attempt()
    (out / "manifest.json").write_bytes(good)
    assert FeatureStore(out).verify(dataset, log=quiet) == []


def test_damaged_plan_is_refused_and_a_damaged_progress_record_is_recomputed(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 6, "pos": 6})
    ref, out = tmp_path / "ref", tmp_path / "out"
    build(load_index(root, seed=0), ref, batch_size=2, shard_mb=60_000 / 2**20)
    proc = run_script(root, out, 60_000, "preload-committed:3")
    proc.wait(timeout=120)
    progress = sorted((out / "progress").glob("*.json"))
    progress[0].write_bytes(b'{"done": 4, "records": [nul')  # a record cut short
    plan = (out / "plan.json").read_bytes()
    (out / "plan.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(StoreError, match=r"plan\.json is damaged: not UTF-8 text.*--overwrite"):
        build(load_index(root, seed=0), out, batch_size=2, shard_mb=60_000 / 2**20)
    (out / "plan.json").write_bytes(plan)
    build(load_index(root, seed=0), out, batch_size=2, shard_mb=60_000 / 2**20)
    assert tree(out) == tree(ref)  # the shard with the damaged record was computed again, byte-identical


def test_disk_full_during_preload_is_an_error_and_a_rerun_finishes_identically(tmp_path, monkeypatch):
    import errno

    from fptplus.store import writer

    root = class_folders(tmp_path / "data", {"neg": 6, "pos": 6})
    ref, out = tmp_path / "ref", tmp_path / "out"
    build(load_index(root, seed=0), ref, batch_size=2, shard_mb=60_000 / 2**20)
    calls = []

    def full(fd, offset, length):
        calls.append(length)
        if len(calls) > 6:  # the disk fills up after the first shard
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.os, "posix_fallocate", full)
    with pytest.raises(StoreError, match=r"disk full while writing the feature store .* rerun the same command"):
        build(load_index(root, seed=0), out, batch_size=2, shard_mb=60_000 / 2**20)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists()
    build(load_index(root, seed=0), out, batch_size=2, shard_mb=60_000 / 2**20)
    assert tree(out) == tree(ref)


def _can_mount_tmpfs() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, check=False) if shutil.which("unshare") else None  # fmt: skip
    return probe is not None and probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare + tmpfs in a user namespace")
def test_a_really_full_disk_is_an_error_not_a_sigbus(tmp_path):
    """A 96 KiB tmpfs (private mount namespace): the store needs ~170 KiB; the up-front check is skipped, as if
    another process filled the disk after it. Then the tmpfs grows and the same command finishes the store."""
    root = class_folders(tmp_path / "data", {"neg": 6, "pos": 6})
    ref, mnt, copy = tmp_path / "ref", tmp_path / "mnt", tmp_path / "copy"
    build(load_index(root, seed=0), ref, batch_size=2, shard_mb=60_000 / 2**20)
    mnt.mkdir()
    code = SCRIPT_FULL_DISK.format(mnt=mnt, data=root, weights=tiny_weights(), copy=copy, tiny=repr(TINY))
    proc = subprocess.run(["unshare", "-rm", sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SKIP_DISK_CHECK": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    first_rc, first_err = proc.stdout.strip().split("\n", 1)
    assert first_rc == "2" and "disk full while writing the feature store" in first_err, first_err
    assert "Traceback" not in first_err
    assert tree(copy) == tree(ref)


SCRIPT_FULL_DISK = """
import shutil, subprocess, sys
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", "{mnt}"], check=True)
cmd = [sys.executable, "-c", '''
import os, sys
import fptplus.store.writer as writer
writer.check_disk = lambda *args: None
from fptplus.cli import main
sys.exit(main(["preload", "--data", "{data}", "--out", "{mnt}/store", "--img-size", "64", "--side-img-size", "32",
               "--set", "backbone_kwargs={tiny}", "--set", "side_depth=2", "--set", "reduction=2",
               "--set", "num_prompts=4", "--weights", "{weights}", "--batch-size", "2", "--workers", "0",
               "--shard-mb", str(60_000 / 2**20)]))
''']
first = subprocess.run(cmd, capture_output=True, text=True)
print(first.returncode)
print(first.stderr.strip().splitlines()[-1] if first.stderr.strip() else "")
subprocess.run(["mount", "-o", "remount,size=4m", "{mnt}"], check=True)
second = subprocess.run(cmd, capture_output=True, text=True)
if second.returncode != 0:
    sys.exit("rerun failed: " + second.stderr[-2000:])
shutil.copytree("{mnt}/store", "{copy}")
"""


@pytest.mark.parametrize("where", ["here", "workers", "measured"])
def test_auto_threads_place_decoding_without_changing_a_byte(dataset, tmp_path, monkeypatch, where):
    from fptplus.store import writer
    from fptplus.threads import Placement

    ref = tmp_path / "ref"
    build(dataset, ref, threads=1)  # 14 images, batches of 3, decoded in this process
    if where != "measured":  # both branches, whatever the timings say
        forced = Placement(2, 0, "forced") if where == "here" else Placement(1, 1, "forced")
        monkeypatch.setattr(writer, "place_decoding", lambda *a: forced)
    loaders, lines = [], []
    real_loader = writer._loader
    monkeypatch.setattr(writer, "_loader", lambda ds, batches, w: loaders.append((len(batches), w)) or
                        real_loader(ds, batches, w))  # fmt: skip
    monkeypatch.setattr(writer, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    build(dataset, tmp_path / "auto", num_workers=1, log=lines.append)
    assert tree(tmp_path / "auto") == tree(ref)  # where decoding runs never changes the store
    assert torch.get_num_threads() == before  # the caller's threads, restored
    said = [line for line in lines if line.startswith("preload threads:")]
    assert len(said) == 1 and ("decoding" in said[0] or "forced" in said[0])
    if where == "here":
        assert loaders == [] and "decode workers: 0" in said[0]
    elif where == "workers":
        assert loaders == [(5 - writer.CALIBRATION_BATCHES, 1)]  # the batches after the two timed ones
        assert "preload threads: 1, decode workers: 1" in said[0]


def test_threads_n_or_a_single_batch_decode_in_the_workers_asked_for(dataset, tmp_path, monkeypatch):
    from fptplus.store import writer

    loaders, lines = [], []
    real_loader, real_make, before = writer._loader, writer.make_engine, torch.get_num_threads()
    monkeypatch.setattr(writer, "_loader", lambda ds, batches, w: loaders.append((len(batches), w)) or
                        real_loader(ds, batches, w))  # fmt: skip
    build(dataset, tmp_path / "n", num_workers=1, threads=1, log=lines.append)
    seen = []  # one batch: nothing to place, so the pass keeps the caller's threads beside the worker
    monkeypatch.setattr(
        writer, "make_engine", lambda *a, **k: seen.append(torch.get_num_threads()) or real_make(*a, **k)
    )
    monkeypatch.setattr(writer, "available_cores", lambda: 7)
    torch.set_num_threads(1)
    try:
        build(dataset, tmp_path / "one", num_workers=1, batch_size=16, log=lines.append)
    finally:
        torch.set_num_threads(before)
    assert loaders == [(5, 1), (1, 1)] and seen == [1]
    assert "preload threads: 1 (--threads), decode workers: 1" in lines
