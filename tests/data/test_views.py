"""Asymmetric views: fixed LPM view, seeded side augmentation, side source round trip."""

from __future__ import annotations

import torch

from fptplus.data.views import ViewConfig, Views, sample_seed

CFG = ViewConfig(lpm_size=64, side_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def img(h=90, w=120, seed=0):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_lpm_view_is_resize_and_normalise_only():
    views = Views(CFG)
    hr = views.high_res(img())
    assert hr.shape == (3, 64, 64) and hr.dtype == torch.uint8
    x = views.lpm_view(hr)
    torch.testing.assert_close(x, (hr.float() / 255 - 0.5) / 0.25)
    assert torch.equal(views.lpm_view(views.high_res(img())), x)  # never augmented


def test_side_source_and_eval_view():
    views = Views(CFG)
    hr = views.high_res(img())
    src = views.side_source(hr)
    assert src.dtype == torch.uint8 and src.shape == (3, 64, 64)  # 2 × side, capped at LPM size
    assert CFG.source_hw == (64, 64) and ViewConfig(512, 128).source_hw == (256, 256)
    ev = views.side_view(src, train=False)
    assert ev.shape == (3, 32, 32) and torch.equal(ev, views.side_view(src, train=False))
    float_hr = views.high_res(img().float() / 255)  # 16-bit/DICOM sources arrive as float
    assert views.side_source(float_hr).dtype == torch.uint8


def test_train_view_seeded_and_varied():
    views = Views(CFG)
    src = views.side_source(views.high_res(img()))
    a = views.side_view(src, train=True, seed=sample_seed(0, 1, 5))
    b = views.side_view(src, train=True, seed=sample_seed(0, 1, 5))
    c = views.side_view(src, train=True, seed=sample_seed(0, 2, 5))
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    state = torch.get_rng_state()
    views.side_view(src, train=True, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # seeded augmentation leaves the global RNG alone
    assert not torch.equal(a, views.side_view(src, train=False))


def test_sample_seeds_distinct():
    seeds = {sample_seed(r, e, i) for r in range(3) for e in range(20) for i in range(500)}
    assert len(seeds) == 3 * 20 * 500


def test_pad_keeps_the_aspect_ratio_on_black():
    img = torch.full((3, 40, 80), 200, dtype=torch.uint8)  # 1:2 landscape
    padded = Views(ViewConfig(64, 32, resize="pad")).high_res(img)
    assert padded.shape == (3, 64, 64) and padded.dtype == torch.uint8
    assert (padded[:, 16:48] == 200).all()  # the image, 32 rows tall, centred
    assert (padded[:, :16] == 0).all() and (padded[:, 48:] == 0).all()  # black bars
    squashed = Views(ViewConfig(64, 32)).high_res(img)
    assert (squashed == 200).all()  # squash fills the square, stretching the image
    tall = Views(ViewConfig((64, 32), 16, resize="pad")).high_res(torch.ones(3, 64, 64))
    assert tall.shape == (3, 64, 32) and (tall[:, 16:48] == 1).all() and (tall[:, :16] == 0).all()


def test_pad_is_part_of_the_store_fingerprint():
    from fptplus.store.plan import store_spec

    from conftest import tiny_config

    squash, pad = store_spec(tiny_config()), store_spec(tiny_config(), resize="pad")
    assert squash.fingerprint["resize"] == "bilinear+antialias"  # stores made before the option stay valid
    assert pad.fingerprint["resize"] == "pad+bilinear+antialias"
