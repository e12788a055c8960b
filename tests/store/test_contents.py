"""A store's bytes are trusted only as written: shard hashes once per file version, token indices on every read,
NaN/inf never written."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fptplus.data.sources import load_index
from fptplus.store import FeatureStore, StoreError
from fptplus.store.contents import CACHE_FILE, verify_shards
from fptplus.weights import file_sha256
from imagegen import class_folders
from storetools import build, tiny_weights

from conftest import tiny_config


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    index = load_index(class_folders(tmp_path / "data", {"neg": 5, "pos": 5}), seed=0)
    build(index, tmp_path / "store", dtype="float16")
    return tmp_path / "store"


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_each_file_version_is_hashed_once(store):
    m = manifest(store)
    fields = list(m["fields"])
    lines = []
    assert verify_shards(store, m, fields, lines.append) > 0 and "checking" in lines[0]
    assert verify_shards(store, m, fields, lines.append) == 0.0 and len(lines) == 1  # recorded: not read again
    path = store / "shard-00000.side.npy"
    st = path.stat()
    time.sleep(0.01)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -r`: same mtime, but the change time moves
    assert verify_shards(store, m, fields, lines.append) > 0  # hashed again (and still sound)


@pytest.mark.parametrize("damage", ["permute", "zero_side", "swap"])
def test_damaged_shards_are_refused_when_the_store_is_checked(store, damage):
    FeatureStore(store).check_compatible(manifest(store)["fingerprint"])  # sound: passes (and is recorded)
    values = store / "shard-00000.values.npy"
    if damage == "permute":
        arr = np.load(values, mmap_mode="r+")
        arr[:] = arr[::-1].copy()
        arr.flush()
    elif damage == "zero_side":
        arr = np.load(store / "shard-00000.side.npy", mmap_mode="r+")
        arr[:] = 0
        arr.flush()
    else:
        keys = store / "shard-00000.keys.npy"
        tmp = store / "tmp.npy"
        os.replace(keys, tmp)
        os.replace(values, keys)
        os.replace(tmp, values)
    with pytest.raises(StoreError, match="differs from what the preload wrote"):
        FeatureStore(store).check_compatible(manifest(store)["fingerprint"])


def test_token_indices_out_of_range_are_refused_on_read(store):
    idx = np.load(store / "shard-00000.indices.npy", mmap_mode="r+")
    idx[2, 0, 0, 0] = 999  # the tiny LPM has 17 tokens
    idx.flush()
    m = manifest(store)
    m["shards"][0]["sha256"]["indices"] = file_sha256(store / "shard-00000.indices.npy")  # as if written so
    (store / "manifest.json").write_text(json.dumps(m))
    s = FeatureStore(store)
    s[1]
    with pytest.raises(StoreError, match=r"token indices outside 0\.\.16"):
        s[2]


def test_nan_features_are_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    index = load_index(class_folders(tmp_path / "data", {"neg": 3, "pos": 3}), seed=0)
    state = load_file(tiny_weights())
    state["norm.weight"] = torch.full_like(state["norm.weight"], float("nan"))  # damaged weights
    bad = tmp_path / "nan.safetensors"
    save_file(state, bad)
    with pytest.raises(StoreError, match="NaN/inf"):
        build(index, tmp_path / "store", cfg=tiny_config(num_classes=2, weights=str(bad)))
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_the_cache_never_holds_a_damaged_file(store):
    m = manifest(store)
    arr = np.load(store / "shard-00000.keys.npy", mmap_mode="r+")
    arr[0] = 0
    arr.flush()
    with pytest.raises(StoreError):
        verify_shards(store, m, list(m["fields"]), lambda s: None)
    cache = (
        json.loads((store.parent / "cache" / CACHE_FILE).read_text())
        if (store.parent / "cache" / CACHE_FILE).exists()
        else {"files": {}}
    )
    assert not any(k.endswith("keys.npy") for k in cache["files"])
