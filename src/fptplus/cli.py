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


def cmd_params(args: argparse.Namespace) -> int:
    method = get_method(args.method)
    overrides = dict(backbone=args.backbone, img_size=args.img_size, num_classes=args.num_classes)
    cfg = method.make_config(**{**overrides, **parse_overrides(method.config_cls, args.set)})
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
    p.add_argument("--backbone", default="vit_base_patch16_224", help="timm ViT name of the large model")
    p.add_argument("--img-size", type=_size, default=512, help="LPM input size, N or HxW")
    p.add_argument("--num-classes", type=int, default=2, help="classifier outputs")
    p.add_argument("--method", default="fpt_plus", choices=available_methods(), help="transfer-learning method")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any config field, e.g. --set num_prompts=32 --set side_depth=9",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_params)

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
