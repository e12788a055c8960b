"""`--crop foreground`: the content's box on synthetic fundus- and mammogram-like images, the frames it must leave
whole, the views that use it and the store fingerprint that records it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fptplus.config import DataConfig
from fptplus.data.crop import crop_foreground, foreground_box
from fptplus.data.views import ViewConfig, Views


def noise(h, w, high=12, seed=0):
    """Black background with JPEG-like noise below the floor."""
    return torch.randint(0, high, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def fundus(h=300, w=450, r=170, seed=0):
    """A 3:2 frame with a disc clipped at top and bottom: reddish centre, dark (but not black) rim."""
    img = noise(h, w, seed=seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2).sqrt()
    disc = d <= r
    shade = (1 - 0.7 * (d / r).clamp(max=1)) * 160 + 20  # 180 centre -> 68 at the rim
    for c, f in enumerate((1.0, 0.5, 0.2)):
        img[c][disc] = (shade * f).clamp(min=25)[disc].to(torch.uint8)
    return img, (round(w / 2 - r), round(w / 2 + r))


def content_inside(img, box):
    top, left, bottom, right = box
    inner = torch.zeros(img.shape[-2:], dtype=torch.bool)
    inner[top:bottom, left:right] = True
    return inner


def test_fundus_frame_is_cut_to_the_disc_width_and_keeps_the_clipped_height():
    img, (x0, x1) = fundus()
    top, left, bottom, right = foreground_box(img)
    assert (top, bottom) == (0, 300)  # clipped disc: every row has retina
    assert abs(left - x0) <= 2 and abs(right - x1) <= 2
    lit = img.amax(0) > 20
    assert not (lit & ~content_inside(img, (top, left, bottom, right))).any()  # no retina pixel cut away


def test_mammogram_label_stays_out_of_the_box():
    img = noise(512, 512, high=8, seed=1)
    yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    breast = ((yy - 280) / 200) ** 2 + (xx / 230) ** 2 <= 1  # a half-ellipse on the left edge
    img[:, breast] = 150
    img[:, 20:60, 400:480] = 255  # the film's label, detached
    top, left, bottom, right = foreground_box(img)
    assert left == 0 and abs(right - 230) <= 3 and abs(top - 80) <= 3 and abs(bottom - 480) <= 3
    assert right < 400  # the label is not content


@pytest.mark.parametrize(
    "img",
    [
        torch.randint(100, 200, (3, 120, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)),
        torch.zeros(3, 64, 64, dtype=torch.uint8),  # blank
        noise(200, 200),  # background only
    ],
    ids=["no-background", "black", "noise"],
)
def test_frames_without_a_dark_surround_or_without_content_stay_whole(img):
    assert foreground_box(img) == (0, 0, *img.shape[-2:])


def test_a_speck_is_not_content():
    img = noise(300, 300)
    img[:, 100:102, 100:102] = 255  # 4 px of 90,000
    assert foreground_box(img) == (0, 0, 300, 300)


def test_large_image_box_on_the_thumbnail_still_holds_all_content():
    """Thumbnail step 6 here: the box is found on every 6th pixel, grown by one step, so nothing is cut."""
    img, (x0, x1) = fundus(h=2000, w=3000, r=1150, seed=3)
    box = foreground_box(img)
    lit = img.amax(0) > 20
    assert not (lit & ~content_inside(img, box)).any()
    assert abs(box[1] - x0) <= 12 and abs(box[3] - x1) <= 12


def test_float_and_uint8_give_the_same_box():
    img, _ = fundus(seed=4)
    assert foreground_box(img) == foreground_box(img.float() / 255)
    assert crop_foreground(img).shape == (3, 300, foreground_box(img)[3] - foreground_box(img)[1])


def test_views_crop_then_pad_to_the_input_shape():
    img, _ = fundus()
    hr = Views(ViewConfig(64, 32, resize="foreground")).high_res(img)
    assert hr.shape == (3, 64, 64) and hr.dtype == torch.uint8
    rows = np.flatnonzero((hr.amax(0) > 20).any(1).numpy())
    cols = np.flatnonzero((hr.amax(0) > 20).any(0).numpy())
    # the disc's width (340 px) now fills the 64 px side; its clipped height (300 px) gets 56-57 rows, centred
    assert cols[0] <= 1 and cols[-1] >= 62
    assert 3 <= rows[0] <= 5 and 58 <= rows[-1] <= 60
    squash = Views(ViewConfig(64, 32)).high_res(img)
    assert (squash.amax(0) > 20).float().mean() < (hr.amax(0) > 20).float().mean()  # more retina per pixel


def test_crop_is_a_data_option_in_the_store_fingerprint():
    from fptplus.store.plan import store_spec

    from conftest import tiny_config

    assert DataConfig(crop="foreground").geometry == "foreground"
    assert DataConfig(resize="pad").geometry == "pad" and DataConfig().geometry == "squash"
    crop, pad = store_spec(tiny_config(), resize="foreground"), store_spec(tiny_config(), resize="pad")
    assert crop.fingerprint["resize"] == "foreground-crop-v1+pad+bilinear+antialias"
    assert crop.fingerprint != pad.fingerprint
