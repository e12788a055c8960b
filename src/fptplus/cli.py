"""`fptplus` command line: a thin layer that parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import FPTPlusError
from .methods import available_methods, get_method
from .overrides import parse_overrides


def _size(text: str) -> int | tuple[int, int]:
    """'512' -> 512, '448x512' -> (448, 512)."""
    parts = text.lower().split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(nums) == 1:
        return nums[0]
    if len(nums) == 2:
        return (nums[0], nums[1])
    raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}")


def add_model_args(p: argparse.ArgumentParser, weights: bool = True) -> None:
    """The options that define a model (shared by every command that builds one)."""
    p.add_argument("--method", default="fpt_plus", choices=available_methods(), help="transfer-learning method")
    p.add_argument("--backbone", default="vit_base_patch16_224", help="timm ViT name of the large model")
    if weights:
        p.add_argument("--weights", default=None, help="LPM weights: a local file, 'hub', or omit for random init")
    p.add_argument("--img-size", type=_size, default=512, help="LPM (high) input size, N or HxW")
    p.add_argument("--side-img-size", type=_size, default=None, help="side input size (default: the method's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any model config field, e.g. --set num_prompts=32 --set side_depth=9",
    )


def model_config(args: argparse.Namespace, **extra):
    """The method's typed config from the command-line options."""
    method = get_method(args.method)
    overrides = dict(backbone=args.backbone, img_size=args.img_size, **extra)
    if getattr(args, "weights", None) is not None:
        overrides["weights"] = args.weights
    if args.side_img_size is not None:
        overrides["side_img_size"] = args.side_img_size
    return method, method.make_config(**{**overrides, **parse_overrides(method.config_cls, args.set)})


def cmd_params(args: argparse.Namespace) -> int:
    method, cfg = model_config(args, num_classes=args.num_classes)
    model = method.build(cfg, with_lpm=False, device="meta")  # shapes only: no weights, no memory
    count = model.param_count()
    result = dict(
        method=args.method,
        backbone=cfg.backbone,
        img_size=list(model.spec.img_size),
        num_classes=cfg.num_classes,
        trainable=count.trainable,
        total=count.total,
        percent=round(count.percent, 4),
    )
    if args.json:
        print(json.dumps(result))
    else:
        h, w = model.spec.img_size
        print(f"method     {args.method}")
        print(f"backbone   {cfg.backbone} @ {h}x{w} ({model.spec.num_params:,} frozen LPM parameters)")
        print(f"trainable  {count.trainable:,}")
        print(f"total      {count.total:,}")
        print(f"learnable  {count.percent:.2f} % ({count.percent:.4f} %)")
    return 0


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split-seed", type=int, default=0, help="seed of the automatic 70/10/20 split")
    p.add_argument(
        "--allow-missing-classes", action="store_true", help="accept classes absent from val or test (AUC undefined)"
    )


def load_data(args: argparse.Namespace):
    from .data.sources import load_index

    index = load_index(args.data, seed=args.split_seed, allow_missing_classes=args.allow_missing_classes)
    print(index.describe())
    if index.ignored:
        print(f"ignored {len(index.ignored)} non-image files, e.g. {index.ignored[:3]}")
    return index


def cmd_preload(args: argparse.Namespace) -> int:
    from .store import FeatureStore, PreloadOptions, preload

    if args.verify:
        store = FeatureStore(args.out)
        problems = store.verify(load_data(args) if args.data else None)
        for p in problems:
            print(f"PROBLEM {p}")
        print(f"{args.out}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 0 if not problems else 1
    index = load_data(args)
    _, cfg = model_config(args, num_classes=len(index.classes))
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


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(DemoConfig(args.backbone, args.weights, args.img_size, args.side_img_size, steps=args.steps))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fptplus",
        description="FPT+: parameter- and memory-efficient transfer learning for high-resolution medical images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "params",
        help="learnable-parameter ratio of a method (no weights or data needed)",
        description="Counts trainable / total parameters as the paper does (total includes the frozen LPM). "
        "Builds shapes only, so any backbone size is instant.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_args(p, weights=False)
    p.add_argument("--num-classes", type=int, default=2, help="classifier outputs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_params)

    pre = sub.add_parser(
        "preload",
        help="run the frozen LPM once over a dataset and store the selected K/V (the feature store)",
        description="Builds, resumes or verifies a feature store. Rerunning the same command after an "
        "interruption continues where it stopped; a store made for other settings or data is refused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pre.add_argument("--data", required=True, help="dataset: a folder (split or class folders) or a CSV manifest")
    pre.add_argument("--out", required=True, help="feature store folder")
    add_model_args(pre)
    add_data_args(pre)
    pre.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored K/V precision")
    pre.add_argument("--batch-size", type=int, default=16, help="images per LPM forward")
    pre.add_argument("--workers", type=int, default=2, help="image decoding processes")
    pre.add_argument("--shard-mb", type=float, default=1024, help="target shard size in MiB")
    pre.add_argument("--side-source-size", type=int, default=None, help="stored side image size (default 2x side)")
    pre.add_argument("--skip-bad", action="store_true", help="skip undecodable images (listed in skipped.csv)")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    pre.add_argument("--verify", action="store_true", help="verify an existing store instead of building one")
    pre.set_defaults(func=cmd_preload)

    d = sub.add_parser(
        "demo",
        help="smallest end-to-end FPT+ run on generated images",
        description="Builds FPT+, extracts the LPM's selected K/V, checks online == pre-extracted, and trains "
        "a few steps from the extracted features.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument("--backbone", default="vit_small_patch14_dinov2", help="timm ViT name of the large model")
    d.add_argument("--weights", default=None, help="LPM weights: a local file, 'hub', or omit for random init")
    d.add_argument("--img-size", type=int, default=518, help="LPM input size")
    d.add_argument("--side-img-size", type=int, default=None, help="side input size (default: about a quarter)")
    d.add_argument("--steps", type=int, default=8, help="training steps")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FPTPlusError as err:
        print(f"fptplus {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
