"""The newcomer's path: weights sources, settings refused before any data is read, the default side size."""

from __future__ import annotations

import time

import pytest
import yaml

from fptplus.cli import main
from fptplus.config import RunConfig
from fptplus.model import FPTConfig
from fptplus.trainer.run import absolutize
from imagegen import class_folders

from conftest import TINY


@pytest.fixture
def data(tmp_path):
    return class_folders(tmp_path / "data", {"neg": 6, "pos": 6})


def test_every_weights_source_survives_the_saved_config(tmp_path, monkeypatch):
    (tmp_path / "w.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for given, saved in [("builtin:dinov2_vits14", "builtin:dinov2_vits14"), ("hub", "hub"), ("none", "none"),
                         ("w.safetensors", str(tmp_path / "w.safetensors"))]:  # fmt: skip
        cfg = RunConfig("fpt_plus", FPTConfig(weights=given))
        absolutize(cfg)
        assert cfg.model.weights == saved


@pytest.mark.parametrize(
    "flags,message",
    [
        ([], "no --weights given; the frozen ViT needs weights: a local .safetensors"),
        (
            ["--weights", "builtin:dinov2_vits14"],
            "builtin:dinov2_vits14 is a vit_small_patch14_dinov2; pass --backbone",
        ),
        (["--weights", "builtin:resnet"], "unknown built-in weights 'builtin:resnet'"),
        (["--weights", "missing.safetensors"], "weight file 'missing.safetensors' does not exist; --weights takes"),
        (
            ["--weights", "builtin:dinov2_vits14", "--backbone", "vit_small_patch14_dinov2"],
            "input size 512x512 is not a multiple of the patch size 14",
        ),
        (
            [
                "--weights",
                "builtin:dinov2_vits14",
                "--backbone",
                "vit_small_patch14_dinov2",
                "--img-size",
                "518",
                "--side-img-size",
                "128",
            ],
            "side input size 128x128 is not a multiple of the patch size 14",
        ),
        (["--weights", "none", "--set", "side_depth=40"], "cannot fuse 40 layers"),
    ],
)
@pytest.mark.parametrize("command", ["train", "preload"])
def test_bad_settings_are_refused_before_any_work(data, tmp_path, flags, message, command, capsys):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert main([command, "--data", str(data), "--out", str(out), *flags]) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing indexed, written or preloaded


def test_random_init_must_be_asked_for_and_is_recorded(data, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "4", "--num-workers",
            "0", "--bootstrap", "0", "--img-size", "64", "--backbone-kwargs", repr(TINY), "--side-depth", "2",
            "--reduction", "2", "--num-prompts", "4", "--weights", "none"]  # fmt: skip
    assert main(args) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert saved["weights"] == "none" and saved["side_img_size"] == 16  # 64 / 4, a multiple of the patch 16


@pytest.mark.parametrize(
    "img,patch,side", [(512, 16, 128), (518, 14, 126), (224, 14, 56), (896, 14, 224), ((448, 672), 14, (112, 168))]
)
def test_default_side_size_is_the_patch_multiple_nearest_a_quarter(img, patch, side):
    want = side if isinstance(side, tuple) else (side, side)
    assert FPTConfig(img_size=img).side_size((patch, patch)) == want
    assert FPTConfig(img_size=img, side_img_size=96).side_size((patch, patch)) == (96, 96)


def _tiny_train_args(data, run, *extra: str) -> list[str]:
    """`fptplus train` on the tiny ViT for one epoch into `run`, then `extra` (the flag under test last)."""
    return ["train", "--data", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "4", "--num-workers",
            "0", "--bootstrap", "0", "--img-size", "64", "--backbone-kwargs", repr(TINY), "--side-depth", "2",
            "--reduction", "2", "--num-prompts", "4", "--weights", "none", *extra]  # fmt: skip


def test_resize_pad_end_to_end(data, tmp_path, capsys):
    import json

    run = tmp_path / "run"
    args = _tiny_train_args(data, run, "--resize", "pad")
    assert main(args) == 0
    manifest = json.loads((run / "store" / "manifest.json").read_text())
    assert manifest["fingerprint"]["resize"] == "pad+bilinear+antialias"
    assert main(["evaluate", str(run)]) == 0  # the run's own resize mode is used to check its store
    capsys.readouterr()
    assert (
        main([*args[:4], str(tmp_path / "run2"), *args[5:-2], "--resize", "squash", "--store", str(run / "store")]) == 2
    )
    assert "resize: store has 'pad+bilinear+antialias', expected 'bilinear+antialias'" in capsys.readouterr().err


def test_crop_foreground_end_to_end(data, tmp_path, capsys):
    """--crop foreground reaches the store's fingerprint, evaluate re-uses it, a run without it is refused that
    store by name, and a bad value names the flag."""
    import json

    run = tmp_path / "run"
    args = _tiny_train_args(data, run, "--crop", "foreground")
    assert main(args) == 0
    manifest = json.loads((run / "store" / "manifest.json").read_text())
    assert manifest["fingerprint"]["resize"] == "foreground-crop-v1+pad+bilinear+antialias"
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["crop"] == "foreground"
    assert main(["evaluate", str(run)]) == 0
    capsys.readouterr()
    assert main([*args[:4], str(tmp_path / "run2"), *args[5:-2], "--store", str(run / "store")]) == 2
    assert "store has 'foreground-crop-v1+pad+bilinear+antialias', expected 'bilinear+antialias'" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main([*args[:-1], "middle"])
    assert "--crop" in capsys.readouterr().err
