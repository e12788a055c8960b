"""The `fptplus` command line."""

from __future__ import annotations

import json

import pytest

from fptplus.cli import main


def test_params_command(capsys):
    assert main(["params", "--backbone", "vit_base_patch16_224", "--img-size", "512", "--num-classes", "2",
                 "--method", "fpt_plus"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "trainable  900,674" in out and "total      87,335,234" in out and "1.03 %" in out


def test_params_json_and_overrides(capsys):
    assert main(["params", "--method", "fpt", "--json"]) == 0
    fpt = json.loads(capsys.readouterr().out)
    assert fpt["method"] == "fpt" and round(fpt["percent"], 2) == 1.82
    assert main(["params", "--json", "--set", "num_prompts=32", "--img-size", "448x512", "--side-img-size", "128"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["img_size"] == [448, 512] and res["trainable"] == 900_674 + 16 * 6 * 768  # 16 more prompts per layer


@pytest.mark.parametrize(
    "argv,message",
    [
        (["params", "--set", "bogus=1"], "has no field 'bogus'"),
        (["params", "--img-size", "500"], "Nearest valid sizes: 496 or 512"),
        (["params", "--set", "token_ratio=1.5"], "token_ratio must be in (0, 1]"),
        (["params", "--backbone", "vit_huge_nonexistent"], "unknown timm model name"),
    ],
)
def test_params_errors_are_one_clear_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
