"""Store codecs: what is written is what is decoded, stores named by dtype still open, raw codes are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fptplus.data.sources import load_index
from fptplus.errors import ConfigError
from fptplus.prompt_attention import prompt_attention
from fptplus.store import FeatureStore, StoreError
from fptplus.store.codecs import CODECS, codec_of
from imagegen import class_folders
from storetools import build


@pytest.mark.parametrize("name", sorted(CODECS))
def test_encode_decode_round_trip(name):
    codec = CODECS[name]
    x = torch.randn(3, 2, 4, 5, 8)
    stored = codec.encode("keys", x)
    assert stored.dtype == np.dtype(name) and stored.shape == x.shape
    back = codec.decode("keys", stored[1])
    assert back.is_floating_point()
    torch.testing.assert_close(back.float(), x[1], atol=2e-3 if name == "float16" else 0, rtol=1e-3)


def test_stores_decode_through_their_codec(tmp_path):
    index = load_index(class_folders(tmp_path / "data", {"neg": 4, "pos": 4}), seed=0)
    build(index, tmp_path / "store", dtype="float32")
    store = FeatureStore(tmp_path / "store")
    assert store.codec.name == "float32" and "codec" not in store.fingerprint  # named by its dtype, as before
    rec, raw = store.features(0), store[0]
    assert rec["keys"].dtype == torch.float32 and np.array_equal(rec["keys"].numpy(), raw["keys"])
    assert rec["indices"].dtype in (torch.int16, torch.int32) and rec["side"].dtype == torch.uint8


def test_unknown_codecs_are_refused(tmp_path):
    with pytest.raises(StoreError, match=r"unknown store codec 'int3'"):
        codec_of({"codec": "int3"})
    index = load_index(class_folders(tmp_path / "data", {"neg": 4, "pos": 4}), seed=0)
    build(index, tmp_path / "store")
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    manifest["fingerprint"]["dtype"] = "bfloat12"
    (tmp_path / "store" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="unknown store codec 'bfloat12'"):
        FeatureStore(tmp_path / "store").check_compatible(manifest["fingerprint"], index)


def test_prompt_attention_refuses_codes_instead_of_casting_them():
    q = torch.randn(2, 4, 3, 8)
    codes = torch.randint(-128, 127, (1, 2, 4, 5, 8), dtype=torch.int8)
    with pytest.raises(ConfigError, match=r"floating-point keys/values, got torch\.int8"):
        prompt_attention(q, codes, codes, 0.3)
