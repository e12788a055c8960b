"""Typed configs read from YAML: wrong types, bad syntax and encodings are one error naming the file and field."""

from __future__ import annotations

import pytest

from fptplus.cli import main
from fptplus.config import DataConfig, RunConfig, TrainConfig, build_dataclass, type_matches
from fptplus.errors import ConfigError
from fptplus.model import FPTConfig


def write(tmp_path, text: str | bytes):
    path = tmp_path / "run.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    "text,message",
    [
        ("train: {epochs: many}", r"run\.yaml: train\.epochs must be an integer, got 'many'"),
        ("train: {betas: [0.9]}", r"train\.betas must be a list of 2 numbers, got \[0\.9\]"),
        ("train: {grad_accum: true}", r"train\.grad_accum must be an integer, got True"),
        ("model: {img_size: big}", r"model\.img_size must be an integer or a list of 2 integers"),
        ("model: {prompt_width: wide}", r"model\.prompt_width must be one of 'lpm', 'side', got 'wide'"),
        ("model: {backbone_kwargs: [1]}", r"model\.backbone_kwargs must be a mapping"),
        ("data: {store: 3}", r"data\.store must be a string or null, got 3"),
        ("data: {max_image_pixels: -1}", r"max_image_pixels must be >= 0"),
        ("model: [1, 2]", r"section 'model' must be a mapping of fields, got list"),
        ("method: [fpt]", r"method must be a name"),
        ("bogus: 1", r"unknown config sections \['bogus'\]"),
        ("- just a list", r"expected a mapping with method/model/data/train sections"),
        ("train: {epochs: [", r"run\.yaml is not valid YAML \(line 1\)"),
        (b"method: fpt\xe9", r"run\.yaml is not UTF-8 text"),
    ],
)
def test_bad_yaml_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.load(write(tmp_path, text))


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    cfg = RunConfig.load(write(tmp_path, "train: {lr: 1e-3, weight_decay: 5e-2}\nmodel: {prompt_init_std: 1e-6}"))
    assert cfg.train.lr == 0.001 and cfg.train.weight_decay == 0.05 and cfg.model.prompt_init_std == 1e-6


def test_saved_configs_round_trip(tmp_path):
    cfg = RunConfig("fpt_plus", FPTConfig(img_size=(448, 512), fused_layers=(10, 11), side_depth=2),
                    DataConfig(data="x", max_image_pixels=0), TrainConfig(lr=2e-3, betas=(0.8, 0.9)))  # fmt: skip
    cfg.save(tmp_path / "c.yaml")
    assert RunConfig.load(tmp_path / "c.yaml") == cfg


def test_cli_reports_the_config_file(tmp_path, capsys):
    path = write(tmp_path, "train: {epochs: zero}")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run.yaml: train.epochs must be an integer" in err and "Traceback" not in err


def test_type_matches_the_hints_in_use():
    assert type_matches((448, 512), tuple[int, int]) and not type_matches((448,), tuple[int, int])
    assert type_matches([1, 2], tuple[int, ...]) and not type_matches([1, "a"], tuple[int, ...])
    assert type_matches(3, float) and not type_matches(True, float) and not type_matches(3.5, int)
    assert build_dataclass(TrainConfig, {"class_weights": "balanced"}, "train").class_weights == "balanced"
    with pytest.raises(ConfigError, match=r"class_weights must be one of 'balanced' or a list of numbers or null"):
        build_dataclass(TrainConfig, {"class_weights": 3}, "train")


@pytest.mark.parametrize(
    "command,cls",
    [
        (["bench", "memory"], "fptplus.bench.options:MemoryOptions"),
        (["bench", "speed"], "fptplus.bench.options:SpeedOptions"),
        (["preload"], "fptplus.store.plan:PreloadOptions"),
    ],
)
def test_option_flags_are_generated_from_the_typed_options(command, cls, capsys):
    """Each field is a flag with its docstring (inherited fields included) and its own default; no hand-kept copies."""
    import dataclasses
    import importlib

    from fptplus.config import field_docs

    module, name = cls.split(":")
    options = getattr(importlib.import_module(module), name)
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    docs = field_docs(options)
    for f in dataclasses.fields(options):
        if f.name in ("skip_bad", "resize"):  # preload takes these from the data section
            continue
        assert "--" + f.name.replace("_", "-") in text, f.name
        assert f.name in docs and " ".join(docs[f.name].split()) in text, f.name
        assert f"(default: {getattr(options(), f.name)!r})" in text, f.name


def test_duplicate_yaml_keys_are_refused_by_line(tmp_path):
    from fptplus.config import RunConfig

    path = tmp_path / "run.yaml"
    path.write_text("method: fpt_plus\ntrain:\n  lr: 0.001\n  epochs: 3\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"the key 'lr' appears twice \(lines 3 and 5\)"):
        RunConfig.load(path)


def test_a_yaml_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    import time

    from fptplus.config import RunConfig

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"  # 1.4 KB that expands to 10^9 values
    path.write_text("\n".join(lines) + "\nmethod: fpt_plus\ndata:\n  label_columns: *a8\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values") as err:
        RunConfig.load(path)
    assert time.perf_counter() - t0 < 5 and len(str(err.value)) < 400
