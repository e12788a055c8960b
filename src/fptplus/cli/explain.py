"""`fptplus explain`: selected tokens and prompt attention of an image (Fig. 9), or per layer over a split (Fig. 5)."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..methods import Method
from .common import FORMATTER


def _head(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--head takes an integer or 'all', got {text!r}") from None


def cmd_explain(args: argparse.Namespace, method: Method) -> int:
    if args.prompt_attention:
        from ..viz.profile import prompt_attention_profile

        rows = prompt_attention_profile(args.run, args.split, args.checkpoint, args.seed, out_dir=args.out)
        for r in rows:
            print(f"LPM block {r['lpm_block']:3d} (side block {r['side_block']}): "
                  f"{r['mean_attention_on_prompts']:.4f}")  # fmt: skip
        return 0
    if not args.images:
        raise ConfigError("pass IMAGE(s) to explain, or --prompt-attention for the per-layer profile")
    from ..viz.explain import explain_image

    for image in args.images:
        info = explain_image(args.run, image, args.layer, args.head, args.prompt, args.out, args.checkpoint, args.seed)
        print(f"{image}: {info['prediction']}; pictures: {info['paths']['summary']}, {info['paths']['tokens']}, "
              f"{info['paths']['attention']}")  # fmt: skip
    return 0


def add_explain_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="FPT/FPT+ pictures: selected tokens + prompt attention (Fig. 9) or per-layer prompt reliance (Fig. 5)",
        description="For each IMAGE: the image with the frozen model's selected tokens outlined (one head, or all "
        "heads coloured by how many chose a patch) and a heat map of the fine-grained prompts' cross-attention over "
        "them. With --prompt-attention: the mean attention side tokens pay to the fused prompts at each layer over "
        "a split (PNG + CSV).",
        formatter_class=FORMATTER,
    )
    p.add_argument("run", help="an FPT/FPT+ run folder")
    p.add_argument("images", nargs="*", help="images to explain (any format the data layer reads)")
    layer_help = "fused LPM block, 0-based as timm's blocks[i] and fused_layers (default: the top one)"
    p.add_argument("--layer", type=int, default=None, help=layer_help)
    p.add_argument("--head", type=_head, default=None, help="attention head, or 'all' (default: all)")
    p.add_argument("--prompt", type=int, default=None, help="one prompt (default: the mean over prompts)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/explain)")
    p.add_argument("--prompt-attention", action="store_true", help="Fig. 5 over --split instead of images")
    p.add_argument("--split", default="val", choices=["train", "val", "test"], help="split for --prompt-attention")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint")
    p.add_argument("--seed", type=int, default=None, help="which seed of a multi-seed run (default: the first)")
    p.set_defaults(func=cmd_explain)
