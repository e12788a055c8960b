"""`fptplus demo`."""

from __future__ import annotations

import argparse

from ..methods import Method
from .common import FORMATTER


def cmd_demo(args: argparse.Namespace, method: Method) -> int:
    from ..demo import DemoConfig, run_demo

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
