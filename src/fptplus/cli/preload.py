"""`fptplus preload`: build, resume or verify a feature store."""

from __future__ import annotations

import argparse
import dataclasses

from ..config import DataConfig, add_dataclass_flags, build_dataclass, given
from ..errors import ConfigError
from ..methods import Method
from ..store.options import PreloadOptions
from .common import FORMATTER, add_model_flags, model_from_args, require_weights


def _load_data(args: argparse.Namespace):
    data = build_dataclass(DataConfig, given(args, DataConfig), "data")
    if not data.data:
        raise ConfigError("pass --data FOLDER_OR_CSV (the dataset to preload)")
    index = data.load_index()
    print(index.describe())
    if index.ignored:
        print(f"ignored {len(index.ignored)} non-image files, e.g. {index.ignored[:3]}")
    for warning in index.warnings:
        print(f"warning: {warning}")
    return index, data


def cmd_preload(args: argparse.Namespace, method: Method) -> int:
    if args.verify:
        from ..store import FeatureStore

        problems = FeatureStore(args.out).verify(_load_data(args)[0])
        for p in problems:
            print(f"PROBLEM {p}")
        print(f"{args.out}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 0 if not problems else 1
    cfg = model_from_args(args, method)
    build_dataclass(DataConfig, given(args, DataConfig), "data").check_path()  # before any model code loads
    require_weights(cfg)
    from ..store import preload  # torch loads here, after the flag checks

    method.validate(cfg)  # a bad setting surfaces now, not after indexing (or an hour of preloading)
    index, data = _load_data(args)
    cfg = dataclasses.replace(cfg, num_classes=len(index.classes))
    values = {**given(args, PreloadOptions), "skip_bad": data.skip_bad, "resize": data.geometry}
    options = build_dataclass(PreloadOptions, values, "preload")
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
    p.add_argument("--out", required=True, help="feature store folder")
    p.add_argument("--verify", action="store_true", help="verify an existing store (and its images) instead")
    add_dataclass_flags(
        p, PreloadOptions, "preload", skip=("skip_bad", "resize"), aliases={"num_workers": ["--workers"]}
    )
    add_dataclass_flags(p, DataConfig, "data", skip=("store", "store_ratio"))  # PreloadOptions has --store-ratio
    add_model_flags(p, method)
    p.set_defaults(func=cmd_preload)
