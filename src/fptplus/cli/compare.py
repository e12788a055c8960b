"""`fptplus compare`: is run A's test AUC different from run B's? (paired bootstrap over the same images)."""

from __future__ import annotations

import argparse
import json

from ..methods import Method
from .common import FORMATTER


def cmd_compare(args: argparse.Namespace, method: Method) -> int:
    from ..compare import compare, read_run_predictions

    a, b = read_run_predictions(args.run_a, args.split), read_run_predictions(args.run_b, args.split)
    result = compare(
        a, b, split=args.split, samples=args.samples, seed=args.seed, level=args.level, seeds=args.resample_seeds
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
    return 0


def add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="is run A better than run B? paired bootstrap of the AUC difference",
        description="Compares two finished runs on the images both predicted (rows matched by path; the labels must "
        "agree). Each run's AUC is the mean over its seeds, as in the results tables; the images are resampled "
        "with replacement and every seed of both runs is scored on each resample, so the interval of A − B is "
        "paired. Prints both AUCs with their intervals, the difference with its interval and a two-sided "
        "bootstrap p-value. Works for binary, multi-class (macro one-vs-rest AUC) and multi-label (mean per-label "
        "AUC) runs.",
        formatter_class=FORMATTER,
    )
    p.add_argument("run_a", help="run folder A (made by `fptplus train`; seed-*/ sub-folders are averaged)")
    p.add_argument("run_b", help="run folder B, evaluated on the same split of the same data")
    p.add_argument("--split", default="test", choices=("test", "val"), help="which predictions_SPLIT.csv to compare")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument(
        "--resample-seeds",
        action="store_true",
        help="also draw each run's seeds with replacement in every resample: the interval then carries "
        "the spread between training seeds too (is the setting better, or did its seeds land well?)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_compare)
