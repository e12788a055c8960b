"""Store codecs: what is written is what is decoded (int8 within its bound), stores named by dtype still open,
raw codes are refused, an int8 store trains the same model as a float32 one (to int8 rounding)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fptplus.data.sources import load_index
from fptplus.data.views import Views
from fptplus.errors import ConfigError
from fptplus.prompt_attention import prompt_attention
from fptplus.store import FeatureStore, StoreError
from fptplus.store.codecs import CODECS, codec_of, dequantize_int8, quantize_int8
from fptplus.store.dataset import StoreDataset
from fptplus.store.plan import store_spec
from imagegen import class_folders
from storetools import build, store_cfg

from conftest import build_tiny


@pytest.mark.parametrize("name", ["float16", "float32"])
def test_encode_decode_round_trip(name):
    codec = CODECS[name]
    x = torch.randn(3, 2, 4, 5, 8)
    stored = codec.encode_batch({"keys": x})["keys"]
    assert stored.dtype == np.dtype(name) and stored.shape == x.shape
    back = codec.decode("keys", stored[1])
    assert back.is_floating_point()
    torch.testing.assert_close(back.float(), x[1], atol=2e-3 if name == "float16" else 0, rtol=1e-3)


def test_int8_round_trip_is_within_half_a_step_per_row():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 5, 64, generator=g) * torch.logspace(-3, 3, 5).view(1, 1, 1, 5, 1)  # rows of all sizes
    x[0, 0, 0, 0] = 0.0  # an all-zero row
    x[0, 0, 0, 1, :3] = torch.tensor([-7.0, 7.0, 3.5])  # exact extremes, both signs
    stored = CODECS["int8"].encode_batch({"keys": x, "values": -x, "cls": x[:, 0, 0, 0]})
    assert stored["keys"].dtype == np.int8 and stored["keys"].shape == x.shape
    assert stored["keys_scale"].dtype == np.float16 and stored["keys_scale"].shape == x.shape[:-1]
    assert stored["cls"].dtype == np.float16
    codes, scale = torch.from_numpy(stored["keys"]), torch.from_numpy(stored["keys_scale"])
    assert codes.abs().max() <= 127 and codes.min() >= -127  # symmetric: -128 never used
    back = dequantize_int8(codes, scale)
    err = (back - x).abs()
    bound = scale.float().unsqueeze(-1) / 2 * (1 + 1e-3)  # half a step (+ fp32 division rounding)
    assert (err <= bound).all()
    rel = err.amax(-1) / x.abs().amax(-1).clamp_min(1e-30)
    assert rel.max() <= 1 / 254 * 1.01  # the fp16-rounded scale keeps the row's max within half a step
    assert torch.equal(back[0, 0, 0, 0], torch.zeros(64)) and scale[0, 0, 0, 0] == 0
    torch.testing.assert_close(back[0, 0, 0, 1, :2], torch.tensor([-7.0, 7.0]), atol=0, rtol=1e-3)  # fp16 scale
    values = dequantize_int8(torch.from_numpy(stored["values"]), torch.from_numpy(stored["values_scale"]))
    torch.testing.assert_close(values, -back)


def test_int8_refuses_what_fp16_scales_cannot_hold():
    with pytest.raises(StoreError, match="--dtype float32"):
        quantize_int8(torch.tensor([[1e9, 0.0]]))
    with pytest.raises(StoreError, match="not finite"):
        quantize_int8(torch.tensor([[float("nan"), 0.0]]))


def test_int8_bytes_per_row():
    fields = CODECS["int8"].fields((6, 12, 205, 64), None)
    kv = sum(f.nbytes for f in fields.values())
    fp32 = 2 * 6 * 12 * 205 * 64 * 4  # the authors' format
    assert kv == 2 * 6 * 12 * 205 * 66 and kv / fp32 <= 0.26


def test_int8_store_trains_the_model_a_float_store_trains(tmp_path):
    """Stored codes + scales reach the prompt attention undecoded and give float32-store logits within int8 error;
    gradients flow to the prompts the same way."""
    index = load_index(class_folders(tmp_path / "data", {"neg": 4, "pos": 4}), seed=0)
    build(index, tmp_path / "f32", dtype="float32")
    build(index, tmp_path / "i8", dtype="int8")
    views = Views(store_spec(store_cfg()).views)
    model = build_tiny(store_cfg())
    model.eval()
    for p in model.parameters():
        if p.requires_grad and p.ndim > 1:
            torch.nn.init.normal_(p, std=0.5)  # prompts far from their 1e-6 init, so K/V matter
    out = {}
    for name in ("f32", "i8"):
        store = FeatureStore(tmp_path / name)
        ds = StoreDataset(store, list(range(4)), views, train=False)
        batch = torch.utils.data.default_collate([ds[j] for j in range(4)])
        if name == "i8":
            assert batch["keys"].dtype == torch.int8 and batch["keys_scale"].shape == batch["keys"].shape[:-1]
        model.zero_grad()
        args, kwargs = model.batch_args(batch)
        logits = model(*args, **kwargs)
        logits.sum().backward()
        out[name] = logits.detach(), model.fusion.prompts.grad.clone()
    torch.testing.assert_close(out["i8"][0], out["f32"][0], atol=2e-2, rtol=2e-2)
    assert not torch.equal(out["i8"][0], out["f32"][0])  # really read the codes
    torch.testing.assert_close(out["i8"][1], out["f32"][1], atol=2e-2, rtol=5e-2)


def test_a_store_is_not_rebuilt_or_reused_across_dtypes(tmp_path):
    index = load_index(class_folders(tmp_path / "data", {"neg": 4, "pos": 4}), seed=0)
    build(index, tmp_path / "store", dtype="float16")
    with pytest.raises(StoreError, match=r"(?s)different complete store.*dtype: store has 'float16', expected 'int8'"):
        build(index, tmp_path / "store", dtype="int8")
    assert FeatureStore(tmp_path / "store").codec.name == "float16"


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
    with pytest.raises(ConfigError, match=r"floating-point keys, or int8 codes with their scales.*int8 without"):
        prompt_attention(q, codes, codes, 0.3)
    scale = torch.ones(1, 2, 4, 5)
    with pytest.raises(ConfigError, match=r"float32 with scales"):
        prompt_attention(q, codes.float(), codes.float(), 0.3, scale, scale)


def test_prompt_attention_decodes_int8_layer_by_layer_like_the_floats():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 3, 8, generator=g, requires_grad=True)
    keys, values = torch.randn(2, 2, 4, 5, 8, generator=g), torch.randn(2, 2, 4, 5, 8, generator=g)
    (kc, ks), (vc, vs) = quantize_int8(keys), quantize_int8(values)
    ctx, probs = prompt_attention(q, kc, vc, 0.3, ks, vs)
    (ctx.sum() + 0).backward()
    grad = q.grad.clone()
    q.grad = None
    ref_ctx, ref_probs = prompt_attention(q, dequantize_int8(kc, ks), dequantize_int8(vc, vs), 0.3)
    ref_ctx.sum().backward()
    torch.testing.assert_close(ctx, ref_ctx, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, q.grad, atol=1e-6, rtol=1e-6)
