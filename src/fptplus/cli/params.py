"""`fptplus params`: learnable-parameter accounting (shapes only)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import given
from ..methods import Method, available_methods, get_method
from .common import FORMATTER, add_model_flags, model_from_args


def count_method(method: Method, cfg: Any) -> dict[str, Any]:
    model = method.build(cfg, device="meta", source=method.sources(cfg)[0])  # shapes only: no weights, no memory
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


def add_params_parser(sub, method: Method) -> None:
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
