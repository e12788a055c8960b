"""`fptplus` command line: a thin layer that parses arguments and calls the library.

Model, data and training flags are generated from the typed config dataclasses, so `--help` lists every
field with its default; `fptplus COMMAND --method NAME --help` shows that method's model fields.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import DataConfig, RunConfig, TrainConfig, add_dataclass_flags, build_dataclass, given
from .errors import ConfigError, FPTPlusError
from .methods import Method, available_methods, get_method
from .overrides import parse_overrides

FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def _method_of(argv: Sequence[str]) -> Method:
    """The --method of the command line (or of its --config / --resume run), before the full parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method")
    pre.add_argument("--config")
    pre.add_argument("--resume")
    known, _ = pre.parse_known_args(argv)
    if known.method == "all":  # `params --method all`: every method, common fields only
        return get_method("fpt_plus")
    if known.method:
        return get_method(known.method)
    for source in (known.config, known.resume and str(Path(known.resume) / "config.yaml")):
        if source and Path(source).exists():
            return get_method(RunConfig.load(source).method)
    return get_method("fpt_plus")


def add_model_flags(p: argparse.ArgumentParser, method: Method, extra_choices: tuple[str, ...] = ()) -> None:
    choices = [*available_methods(), *extra_choices]
    p.add_argument("--method", default=method.name, choices=choices, help="transfer-learning method")
    title = f"model ({method.name}; `--method NAME --help` lists another method's fields)"
    add_dataclass_flags(p, method.config_cls, title, skip=("num_classes",), defaults=method.make_config())
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any model field, e.g. --set num_prompts=32 (same as the flags above)")  # fmt: skip


def model_from_args(args: argparse.Namespace, method: Method, base: dict[str, Any] | None = None, **extra) -> Any:
    values = {**(base or {}), **given(args, method.config_cls), **parse_overrides(method.config_cls, args.set), **extra}
    return build_dataclass(method.config_cls, values, "model", method.make_config)


# -- params ---------------------------------------------------------------------------------------------------


def count_method(method: Method, cfg: Any) -> dict[str, Any]:
    model = method.build(cfg, with_lpm=False, device="meta")  # shapes only: no weights, no memory
    count = model.param_count()
    return dict(method=method.name, backbone=cfg.backbone, img_size=list(model.spec.img_size),
                num_classes=cfg.num_classes, trainable=count.trainable, total=count.total,
                percent=round(count.percent, 4), lpm_params=model.spec.num_params)  # fmt: skip


def cmd_params(args: argparse.Namespace, method: Method) -> int:
    if args.method == "all":
        common = {k: v for k, v in given(args, method.config_cls).items() if k in ("backbone", "backbone_kwargs",
                  "img_size")}  # fmt: skip
        rows = [count_method(m, m.make_config(**common, num_classes=args.num_classes))
                for m in map(get_method, available_methods())]  # fmt: skip
        if args.json:
            print(json.dumps(rows))
            return 0
        h, w = rows[0]["img_size"]
        print(f"{rows[0]['backbone']} @ {h}x{w}, {args.num_classes} classes")
        print(f"{'method':10s} {'trainable':>12s} {'total':>12s} {'learnable %':>12s}")
        for r in rows:
            print(f"{r['method']:10s} {r['trainable']:12,d} {r['total']:12,d} {r['percent']:12.4f}")
        return 0
    cfg = model_from_args(args, method, num_classes=args.num_classes)
    result = count_method(method, cfg)
    count_pct, (h, w) = result["percent"], result["img_size"]
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"method     {method.name}")
    print(f"backbone   {cfg.backbone} @ {h}x{w} ({result['lpm_params']:,} pretrained ViT parameters)")
    print(f"trainable  {result['trainable']:,}")
    print(f"total      {result['total']:,}")
    print(f"learnable  {count_pct:.2f} % ({count_pct:.4f} %)")
    return 0


# -- preload --------------------------------------------------------------------------------------------------


def _load_data(args: argparse.Namespace):
    from .data.sources import load_index

    index = load_index(args.data, seed=args.split_seed, allow_missing_classes=args.allow_missing_classes)
    print(index.describe())
    if index.ignored:
        print(f"ignored {len(index.ignored)} non-image files, e.g. {index.ignored[:3]}")
    return index


def cmd_preload(args: argparse.Namespace, method: Method) -> int:
    from .store import FeatureStore, PreloadOptions, preload

    if args.verify:
        problems = FeatureStore(args.out).verify(_load_data(args))
        for p in problems:
            print(f"PROBLEM {p}")
        print(f"{args.out}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 0 if not problems else 1
    index = _load_data(args)
    cfg = model_from_args(args, method, num_classes=len(index.classes))
    options = PreloadOptions(
        dtype=args.dtype,
        batch_size=args.batch_size,
        num_workers=args.workers,
        shard_bytes=int(args.shard_mb * 2**20),
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        side_source_size=args.side_source_size,
    )
    report = preload(index, cfg, args.out, options)
    if report.complete:
        per = report.bytes_per_sample
        print(
            f"store {report.path}: {report.num_samples} samples, {sum(per.values()) / 2**20:.2f} MiB each "
            f"(K/V {report.kv_bytes_per_sample / 2**20:.2f} MiB, side image {per['side'] / 2**10:.0f} KiB); "
            f"{report.processed} processed in {report.seconds:.1f} s"
        )
        if report.skipped:
            print(f"skipped {len(report.skipped)} undecodable files (see {report.path / 'skipped.csv'})")
    return 0


def add_preload_parser(sub, method: Method) -> None:
    p = sub.add_parser(
        "preload",
        help="run the frozen LPM once over a dataset and store the selected K/V (the feature store)",
        description="Builds, resumes or verifies a feature store. Rerunning the same command after an "
        "interruption continues where it stopped; a store made for other settings or data is refused.",
        formatter_class=FORMATTER,
    )
    p.add_argument("--data", required=True, help="dataset: a folder (split or class folders) or a CSV manifest")
    p.add_argument("--out", required=True, help="feature store folder")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the automatic 70/10/20 split")
    p.add_argument("--allow-missing-classes", action="store_true", help="accept classes absent from val or test")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored K/V precision")
    p.add_argument("--batch-size", type=int, default=16, help="images per LPM forward")
    p.add_argument("--workers", type=int, default=2, help="image decoding processes")
    p.add_argument("--shard-mb", type=float, default=1024, help="target shard size in MiB")
    p.add_argument("--side-source-size", type=int, default=None, help="stored side image size (default 2x side)")
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable images (listed in skipped.csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    p.add_argument("--verify", action="store_true", help="verify an existing store (and its images) instead")
    add_model_flags(p, method)
    p.set_defaults(func=cmd_preload)


# -- train / evaluate / predict -------------------------------------------------------------------------------

RESUME_OK = {"num_workers", "log_every"}


def cmd_train(args: argparse.Namespace, method: Method) -> int:
    from .train.run import resume_config, train

    if args.resume:
        cfg, seeds = resume_config(args.resume)
        changed = set(given(args, DataConfig)) | set(given(args, TrainConfig)) | set(given(args, method.config_cls))
        changed = changed - RESUME_OK
        if changed or args.set or args.config:
            raise ConfigError(f"--resume continues {args.resume} as configured; drop {sorted(changed)} "
                              "(start a new run with --out to change settings)")  # fmt: skip
        for key in RESUME_OK & set(given(args, TrainConfig)):
            setattr(cfg.train, key, getattr(args, key))
        train(cfg, args.resume, seeds, resume=True)
        return 0
    if not args.out:
        raise ConfigError("pass --out RUN_FOLDER (or --resume RUN_FOLDER)")
    base = RunConfig.load(args.config).to_dict() if args.config else {"model": {}, "data": {}, "train": {}}
    same_method = base.get("method", method.name) == method.name
    cfg = RunConfig(
        method=method.name,
        model=model_from_args(args, method, base["model"] if same_method else {}),
        data=build_dataclass(DataConfig, {**base["data"], **given(args, DataConfig)}, "data"),
        train=build_dataclass(TrainConfig, {**base["train"], **given(args, TrainConfig)}, "train"),
    )
    train(cfg, args.out, args.seeds)
    return 0


def add_train_parser(sub, method: Method) -> None:
    p = sub.add_parser(
        "train",
        help="train (and evaluate) a method on a dataset, from the feature store or online",
        description="Runs the paper's protocol: AdamW, cosine per step, best validation AUC, test report. "
        "Precedence: defaults < --config YAML < flags. FPT/FPT+ preload the feature store first (reused when "
        "it matches). Rerun with --resume RUN after an interruption.",
        formatter_class=FORMATTER,
    )
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run folder")
    p.add_argument("--config", help="YAML with method/model/data/train sections (e.g. a run's config.yaml)")
    p.add_argument("--seeds", type=_seeds, default=None, help="repeat for these seeds (e.g. 0,1,2,3,4): mean ± std")
    add_dataclass_flags(p, DataConfig, "data")
    add_dataclass_flags(p, TrainConfig, "training")
    add_model_flags(p, method)
    p.set_defaults(func=cmd_train)


def cmd_evaluate(args: argparse.Namespace, method: Method) -> int:
    from .train.evaluate import evaluate_run

    evaluate_run(args.run, args.split, args.checkpoint, args.seed)
    return 0


def cmd_predict(args: argparse.Namespace, method: Method) -> int:
    from .train.evaluate import predict, write_predictions

    rows = predict(args.run, args.images, args.checkpoint, args.seed, args.batch_size, args.skip_bad)
    if args.out:
        write_predictions(rows, args.out)
        print(f"{len(rows)} predictions written to {args.out}")
    else:
        for r in rows:
            probs = "  ".join(f"{k[5:]}={v:.4f}" for k, v in r.items() if k.startswith("prob_"))
            print(f"{r['path']}\t{r['prediction']}\t{probs}")
    return 0


def add_run_parsers(sub) -> None:
    e = sub.add_parser("evaluate", help="metrics of a trained run on a split", formatter_class=FORMATTER)
    e.add_argument("run", help="run folder (the --out of `fptplus train`)")
    e.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint")
    e.add_argument("--seed", type=int, default=None, help="which seed of a multi-seed run (default: the first)")
    e.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("predict", help="class probabilities for new images", formatter_class=FORMATTER)
    p.add_argument("run", help="run folder (the --out of `fptplus train`)")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", help="write predictions to a .csv or .json file (default: print them)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint")
    p.add_argument("--seed", type=int, default=None, help="which seed of a multi-seed run (default: the first)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward")
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable images instead of failing")
    p.set_defaults(func=cmd_predict)


# -- demo -----------------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, method: Method) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(DemoConfig(args.backbone, args.weights, args.img_size, args.side_img_size, steps=args.steps))
    return 0


def add_demo_parser(sub) -> None:
    d = sub.add_parser(
        "demo",
        help="smallest end-to-end FPT+ run on generated images",
        description="Builds FPT+, extracts the LPM's selected K/V, checks online == pre-extracted, and trains "
        "a few steps from the extracted features.",
        formatter_class=FORMATTER,
    )
    d.add_argument("--backbone", default="vit_small_patch14_dinov2", help="timm ViT name of the large model")
    d.add_argument("--weights", default=None, help="LPM weights: a local file, 'hub', or omit for random init")
    d.add_argument("--img-size", type=int, default=518, help="LPM input size")
    d.add_argument("--side-img-size", type=int, default=None, help="side input size (default: about a quarter)")
    d.add_argument("--steps", type=int, default=8, help="training steps")
    d.set_defaults(func=cmd_demo)


def build_parser(method: Method | None = None) -> argparse.ArgumentParser:
    method = method or get_method("fpt_plus")
    parser = argparse.ArgumentParser(
        prog="fptplus",
        description="FPT+: parameter- and memory-efficient transfer learning for high-resolution medical images.",
        formatter_class=FORMATTER,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    params = sub.add_parser(
        "params",
        help="learnable-parameter ratio of a method (no weights or data needed)",
        description="Counts trainable / total parameters as the paper does (total includes the frozen LPM). "
        "Builds shapes only, so any backbone size is instant.",
        formatter_class=FORMATTER,
    )
    params.add_argument("--num-classes", type=int, default=2, help="classifier outputs")
    params.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_flags(params, method, extra_choices=("all",))
    params.set_defaults(func=cmd_params)
    add_preload_parser(sub, method)
    add_train_parser(sub, method)
    add_run_parsers(sub)
    add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "?"
    try:
        method = _method_of(argv)
        args = build_parser(method).parse_args(argv)
        return args.func(args, method)
    except FPTPlusError as err:
        print(f"fptplus {command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
