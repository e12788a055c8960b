"""Run configuration: typed dataclasses, YAML round trip, and command-line flags generated from the fields.

Precedence: dataclass defaults < YAML file (--config) < command-line flags. Every field of `DataConfig`,
`TrainConfig` and the method's model config becomes a flag whose --help shows its default.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .data.limits import DEFAULT_MAX_PIXELS
from .errors import ConfigError
from .files import display, load_yaml, short_repr
from .methods import get_method
from .store.options import CodecName


@dataclass
class DataConfig:
    """Where the images are and how they are split.

    Attributes:
        data: dataset folder (split or class folders), CSV manifest, or a .zip of class or split folders.
        split_seed: seed of the automatic stratified 70/10/20 split.
        allow_missing_classes: accept classes absent from val or test.
        skip_bad: leave undecodable images out (listed in skipped.csv) instead of failing.
        store: feature store folder for FPT/FPT+ (default: RUN/store, built on first use).
        store_dtype: how the store keeps K/V when this run builds it: "float16", "float32" or "int8" (codes + one
            fp16 scale per token and head, about half of float16's bytes); an existing store must match.
        store_ratio: the token ratio a store this run builds keeps, best first (None: the model's token_ratio); any
            token_ratio up to it then trains from the same store (e.g. --store-ratio 0.5 to tune the ratio later).
        allow_duplicates: accept byte-identical image files that carry different labels (reported either way).
        include_masks: keep files that look like segmentation masks (x_mask.png next to x.png; left out by default).
        max_image_pixels: refuse images whose header announces more pixels (decompression bombs); 0 = no limit.
        ordinal: the classes are ordered grades (e.g. DR 0-4, sorted by name): kappa uses quadratic weights
            (default: unweighted Cohen's kappa, for nominal classes).
        resize: how an image reaches the model's input size: "squash" (resize, aspect ratio not kept: the paper's
            choice) or "pad" (fit the longer side, pad with black: aspect ratio kept; for non-square images).
        crop: "foreground" cuts each image to its content's bounding box before resizing (dark background
            thresholded, largest bright piece kept, see `fptplus.data.crop`) and then pads it to the input's shape
            (aspect ratio kept, whatever `resize` says): fundus photographs' black borders and mammograms'
            background. "none" (default) uses the whole frame. Part of the store fingerprint.
        folds: k-fold cross-validation (`train --folds 5`): the test split stays, train+val are dealt into k
            patient-grouped, class-stratified folds (seeded by split_seed), one run per fold (RUN/fold-F), one
            feature store for all; 0 = the single train/val split.
        label_columns: multi-label classification: the CSV manifest's 0/1 columns, one per label (e.g.
            Atelectasis,Effusion,Nodule); trains with a sigmoid per label and binary cross-entropy, reports per-label
            and mean AUC; empty = one class per image from the 'label' column.
        fold: the fold whose images validate this run (set by `--folds` in each RUN/fold-F; pass it with --folds to
            train one fold only, e.g. one fold per GPU).
    """

    data: str = ""
    split_seed: int = 0
    allow_missing_classes: bool = False
    skip_bad: bool = False
    store: str | None = None
    store_dtype: CodecName = "float16"
    store_ratio: float | None = None
    allow_duplicates: bool = False
    include_masks: bool = False
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    ordinal: bool = False
    resize: Literal["squash", "pad"] = "squash"
    crop: Literal["none", "foreground"] = "none"
    folds: int = 0
    fold: int | None = None
    label_columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not all(isinstance(c, str) and c.strip() for c in self.label_columns):
            raise ConfigError(f"label_columns must be column names, got {self.label_columns!r}")
        if self.max_image_pixels < 0:
            raise ConfigError(f"max_image_pixels must be >= 0 (0: no limit), got {self.max_image_pixels}")
        if self.folds < 0 or self.folds == 1:
            raise ConfigError(f"folds must be 0 (one train/val split) or >= 2, got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < (self.folds or -1):
            which = f"in 0..{self.folds - 1}" if self.folds else "given with --folds K"
            raise ConfigError(f"fold must be {which}, got {self.fold}")

    @property
    def geometry(self) -> str:
        """How an image reaches the input size, as the views and the store's fingerprint take it ("squash", "pad"
        or "foreground": the crop, then padding)."""
        return "foreground" if self.crop == "foreground" else self.resize

    def check_path(self) -> None:
        """Refuses a dataset path that does not exist, before any model code loads (`load_index` checks the rest)."""
        if self.data and not Path(self.data).exists():
            raise ConfigError(f"--data {display(self.data)}: dataset path does not exist (pass a dataset folder, a CSV "
                              "manifest or a zip of class folders)")  # fmt: skip

    def load_index(self, data: str | Path | None = None):
        """The dataset these settings describe (`data` overrides the path, e.g. a run's splits.csv)."""
        from .data.folds import apply_fold
        from .data.sources import load_index

        index = load_index(
            data or self.data,
            seed=self.split_seed,
            allow_missing_classes=self.allow_missing_classes,
            allow_duplicates=self.allow_duplicates,
            include_masks=self.include_masks,
            max_pixels=self.max_image_pixels or None,
            label_columns=self.label_columns,
        )
        return apply_fold(index, self.folds, self.fold, self.split_seed) if self.fold is not None else index


@dataclass
class TrainConfig:
    """The training protocol (paper §4.2: AdamW, cosine per step, 20 epochs, batch 16, best val AUC).

    Attributes:
        epochs: training epochs.
        batch_size: images per optimizer step (per process, before accumulation).
        lr: peak learning rate (None: the method's default, written into the run's config.yaml: FPT/FPT+ 2e-3, the
            authors' FPT configs — on this project's benchmarks validation chose 2e-3 at 3 of 6 settings, 1e-3 at 2,
            5e-4 at 1, and the demo uses 5e-4 because 2e-3 left 1 of 4 seeds at chance there: search it with
            `fptplus tune` or a plan's lr grid —; full FT and attention tuning 1e-4; the others 1e-3; the probes fit
            in closed form and do not use it).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_epochs: linear warm-up length in epochs (then cosine decay to 0, per step).
        grad_clip: max gradient norm (None: no clipping).
        grad_accum: gradient accumulation steps.
        class_weights: cross-entropy class weights: None, "balanced" or a list.
        mixed_precision: "no", "bf16" or "fp16" autocast (GPU).
        preload: FPT/FPT+ train from the feature store (False: LPM runs online in every step).
        num_workers: data loading processes.
        seed: run seed (model init, data order, augmentation, dropout).
        eval_batch_size: batch size for evaluation (None: 2 × batch_size).
        bootstrap: bootstrap resamples for the test AUC 95 % CI (0: none).
        threshold: how the decision threshold of a binary task is chosen on validation (written to
            calibration.json, applied by `predict --decision threshold`): "youden" (max sensitivity + specificity
            − 1) or "sens:S" (the best specificity with sensitivity ≥ S, e.g. sens:0.9).
        log_every: steps between log lines when not on a terminal.
        engine: what computes the feature store when this run builds it: "auto" (default: on a CPU the frozen
            pass exported to OpenVINO, else onnxruntime, when installed and verified against PyTorch on the first
            batch; torch on a GPU or when neither is), "torch", "openvino" or "onnxruntime"; see `fptplus.engines`.
        threads: torch's intra-op threads on a CPU: None = auto (the cores of this process's CPU affinity, minus the
            data-loader workers when they decode images), 0 = torch's default (one per core of the machine), N = N.
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float | None = None
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 0.0
    grad_clip: float | None = 1.0
    grad_accum: int = 1
    class_weights: Literal["balanced"] | list[float] | None = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    preload: bool = True
    num_workers: int = 2
    seed: int = 0
    eval_batch_size: int | None = None
    bootstrap: int = 1000
    threshold: str = "youden"
    log_every: int = 10
    threads: int | None = None
    engine: Literal["auto", "torch", "openvino", "onnxruntime"] = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr is None or 0 < self.lr < math.inf, f"lr must be a finite number > 0, got {self.lr}"),
            (0 <= self.weight_decay < math.inf, f"weight_decay must be a finite number >= 0, got {self.weight_decay}"),
            (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas must be two numbers in [0, 1)"),
            (0 <= self.warmup_epochs < self.epochs, f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}"),
            (
                self.grad_clip is None or 0 < self.grad_clip < math.inf,
                f"grad_clip must be a finite number > 0 or None, got {self.grad_clip}",
            ),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.mixed_precision in ("no", "bf16", "fp16"), "mixed_precision must be 'no', 'bf16' or 'fp16'"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.bootstrap >= 0, f"bootstrap must be >= 0, got {self.bootstrap}"),
            (self.threads is None or self.threads >= 0, f"threads must be >= 0 (0: torch default), got {self.threads}"),
            (
                self.threshold == "youden" or _is_sens_rule(self.threshold),
                f"threshold must be 'youden' or 'sens:S' with 0 < S <= 1 (e.g. sens:0.9), got {self.threshold!r}",
            ),
            (
                self.class_weights is None or self.class_weights == "balanced" or isinstance(self.class_weights, list),
                f"class_weights must be None, 'balanced' or a list of numbers, got {self.class_weights!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class RunConfig:
    """One training run: method + its model config + data + protocol."""

    method: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "model": _plain(dataclasses.asdict(self.model)),
            "data": _plain(dataclasses.asdict(self.data)),
            "train": _plain(dataclasses.asdict(self.train)),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        unknown = set(d) - {"method", "model", "data", "train"}
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; expected method, model, data, train")
        for section in ("model", "data", "train"):
            if d.get(section) is not None and not isinstance(d[section], dict):
                raise ConfigError(f"section {section!r} must be a mapping of fields, got {type(d[section]).__name__}")
        if not isinstance(d.get("method", "fpt_plus"), str):
            raise ConfigError(f"method must be a name, got {d['method']!r}")
        method = get_method(d.get("method", "fpt_plus"))
        return cls(
            method=method.name,
            model=build_dataclass(method.config_cls, d.get("model") or {}, "model", method.make_config),
            data=build_dataclass(DataConfig, d.get("data") or {}, "data"),
            train=build_dataclass(TrainConfig, d.get("train") or {}, "train"),
        )

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Reads a config YAML; anything wrong in it is a ConfigError that names the file and the field."""
        path = Path(path)
        try:
            raw = load_yaml(path.read_bytes().decode("utf-8"), f"config {display(path)}", ConfigError) or {}
        except FileNotFoundError:
            raise ConfigError(f"config {display(path)} does not exist") from None
        except OSError as err:
            raise ConfigError(f"cannot read config {display(path)} ({err.strerror or err})") from None
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"config {display(path)} is not UTF-8 text (byte {err.start}); save it as UTF-8"
            ) from None
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ConfigError(
                f"config {display(path)} is not valid YAML{line}: {getattr(err, 'problem', err)}"
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config {display(path)}: expected a mapping with method/model/data/train sections")
        try:
            return cls.from_dict(raw)
        except ConfigError as err:
            raise ConfigError(f"config {display(path)}: {err}") from None


def _plain(obj: Any) -> Any:
    """Tuples → lists so YAML stays plain."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def build_dataclass(cls: type, values: dict[str, Any], section: str, factory=None) -> Any:
    """`cls(**values)` with unknown keys and values of the wrong type refused by name."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{section}: unknown field(s) {unknown}; valid: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    values = {k: _yaml_float(v, hints[k]) for k, v in values.items()}
    for key, value in values.items():
        if not type_matches(value, hints[key]):
            raise ConfigError(f"{section}.{key} must be {_hint_text(hints[key])}, got {short_repr(value)}")
    try:
        return (factory or cls)(**values)
    except ConfigError as err:
        raise ConfigError(f"{section}: {err}") from None
    except (TypeError, ValueError) as err:  # a constructor that type-checks deeper than the hints
        raise ConfigError(f"{section}: {err}") from None


def _yaml_float(value: Any, hint: Any) -> Any:
    """'1e-3' -> 0.001 for number fields: YAML 1.1 (PyYAML) reads exponents without a dot as strings."""
    if isinstance(value, str) and not type_matches(value, hint) and type_matches(1.5, hint):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def type_matches(value: Any, hint: Any) -> bool:
    """Whether a (YAML or flag) value fits a dataclass field's type hint; lists stand for tuples."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(type_matches(v, a) for v, a in zip(value, args, strict=True))
        return all(type_matches(v, args[0]) for v in value) if args else True
    if origin is dict:
        return isinstance(value, dict)
    if origin is not None and isinstance(origin, type):
        return isinstance(value, origin)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _hint_text(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_text(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, list):
        items = [a for a in args if a is not Ellipsis]
        if not items:
            return "a list"
        plural = {int: "integers", float: "numbers", str: "strings"}.get(items[0], _hint_text(items[0]))
        fixed = origin is tuple and Ellipsis not in args and len(set(items)) == 1
        return f"a list of {len(items)} {plural}" if fixed else f"a list of {plural}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))  # fmt: skip


# -- command-line flags from dataclass fields -----------------------------------------------------------------


def field_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the 'Attributes:' sections of a Google-style docstring (base classes' included)."""
    names = {f.name for f in fields(cls)}
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's description of a field wins
        doc = klass.__dict__.get("__doc__") or ""
        if "Attributes:" not in doc:
            continue
        current = None
        for line in doc.split("Attributes:", 1)[1].splitlines():
            m = re.match(r"\s{4,8}(\w+): (.*)", line)
            if m and m.group(1) in names:
                current = m.group(1)
                out[current] = m.group(2).strip()
            elif current and line.strip():
                out[current] += " " + line.strip()
    return out


def _parse(text: str, hint: Any) -> Any:
    choices = _literal_choices(hint)
    nullable = text.lower() in ("none", "null") and type(None) in typing.get_args(hint)
    if choices and text not in map(str, choices) and not nullable:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, choices))}, got {text!r}")
    if text.lower() in ("none", "null"):
        return None
    if re.fullmatch(r"\d+x\d+", text.lower()):  # image sizes: 448x512 -> (448, 512)
        h, w = text.lower().split("x")
        return (int(h), int(w))
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is bool or bool in args:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
    for simple in (int, float):
        if hint is simple or (origin in (typing.Union, types.UnionType) and args == [simple]):
            try:
                return simple(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {simple.__name__}, got {text!r}") from None
    if hint is str or (origin in (typing.Union, types.UnionType) and args == [str]):
        return text
    if origin is list and args == [str] and not text.lstrip().startswith("["):  # A,B,C
        return [t.strip() for t in text.split(",") if t.strip()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str,
    skip: tuple[str, ...] = (),
    defaults: Any = None,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Adds one --flag per field of `cls` (values default to 'not given', so YAML values survive).

    Args:
        parser: where to add the flags.
        cls: the config dataclass.
        title: argument group title in --help.
        skip: fields that get no flag (set by the program).
        defaults: an instance whose values --help shows (default: `cls()`).
        aliases: more option strings per field (e.g. {"num_workers": ["--workers"]}).
    """
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls() if defaults is None else defaults
    for f in fields(cls):
        if f.name in skip:
            continue
        flags = ["--" + f.name.replace("_", "-"), *(aliases or {}).get(f.name, [])]
        default = getattr(defaults, f.name) if defaults is not None else None
        help_text = f"{docs.get(f.name, '')} (default: {default!r})".replace("%", "%%")
        hint = hints[f.name]
        if hint is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)  # fmt: skip
        else:
            choices = _literal_choices(hint)
            metavar = "{" + ",".join(map(str, choices)) + "}" if choices else f.name.upper()
            group.add_argument(*flags, dest=f.name, type=lambda t, h=hint: _parse(t, h), default=argparse.SUPPRESS,
                               metavar=metavar, help=help_text)  # fmt: skip


def _literal_choices(hint: Any) -> tuple[Any, ...]:
    """The allowed values of a Literal field (an Optional Literal included), else ()."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        literals = [a for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal]
        if len(literals) == 1 and len(typing.get_args(hint)) <= 2:
            return typing.get_args(literals[0])
    return ()


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}


def _is_sens_rule(rule: str) -> bool:
    if not rule.startswith("sens:"):
        return False
    try:
        return 0.0 < float(rule[5:]) <= 1.0
    except ValueError:
        return False
