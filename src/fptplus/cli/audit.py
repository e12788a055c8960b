"""`fptplus audit`: shortcuts, copies and leaks of a dataset (see `fptplus.audit`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..config import DataConfig, add_dataclass_flags, build_dataclass, given
from ..errors import ConfigError
from ..methods import Method
from .common import FORMATTER

# what decides the index and its split; the rest of DataConfig (stores, resize, folds) does not concern an audit
DATA_FIELDS = ("data", "split_seed", "include_masks", "max_image_pixels", "label_columns")


def cmd_audit(args: argparse.Namespace, method: Method) -> int:
    import importlib.util

    from ..audit import AuditOptions, run_audit
    from ..trainer.runfolder import check_output_location

    if importlib.util.find_spec("sklearn") is None:
        raise ConfigError("fptplus audit needs scikit-learn: pip install 'fptplus[audit]'")
    data = build_dataclass(DataConfig, given(args, DataConfig), "data")
    if not data.data:
        raise ConfigError("pass --data FOLDER_OR_CSV (the dataset to audit)")
    if not (0.5 < args.threshold <= 1) or args.max_distance < 0 or args.min_per_split < 0 or args.bootstrap < 0:
        raise ConfigError("--threshold must be in (0.5, 1], --max-distance, --min-per-split and --bootstrap >= 0")
    if not -1 <= args.min_correlation <= 1:
        raise ConfigError(f"--min-correlation must be in [-1, 1], got {args.min_correlation}")
    out = Path(args.out or f"audit-{Path(data.data).stem}")
    check_output_location(out, data.data)  # never inside the dataset
    # an audit reports what training would refuse (copies under two labels, classes missing from a split)
    index = dataclasses.replace(data, allow_duplicates=True, allow_missing_classes=True).load_index()
    print(index.describe())
    options = AuditOptions(args.threshold, args.max_distance, args.min_per_split, args.bootstrap, args.num_workers,
                           args.min_correlation)  # fmt: skip
    record = run_audit(index, out, options, args.run, log=print, data=data.data)
    warnings = record["warnings"]
    print(f"\naudit of {data.data}: {len(warnings)} warning(s)" + (":" if warnings else " — nothing found"))
    copies = [w for w in warnings if w.split(" ", 1)[0] in ("byte-identical", "pixel-identical", "near-duplicate")]
    for w in [w for w in warnings if w not in copies][:12]:  # the summary; every line is in audit.md
        print(f"  ! {w}")
    if copies:
        print(f"  ! {len(copies)} group(s) of copies across splits, labels or groups, e.g. {copies[0]}")
    if record["notes"]:
        print(f"  note: {len(record['notes'])} group(s) of copies inside one split, label and group (no leak)")
    if record["run"]:
        best = max((f["auc"] or 0 for fams in record["baselines"].values() for f in fams), default=0)
        print(f"  the run's test AUC {100 * record['run']['test_auc']:.1f}; the best trivial family {100 * best:.1f}")
    print(f"report: {out / 'audit.md'} (every warning and note; audit.json, pictures, {record['grouped_csv']})")
    return 0


def add_audit_parser(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="find shortcuts, duplicates and leaks in a dataset before training",
        description="Trivial-feature baselines (colour/intensity, layout, size, format, acquisition metadata: a "
        "cross-validated logistic regression per family, AUC with a bootstrap CI), byte-identical, pixel-identical "
        "and near-duplicate images across splits/labels/groups, patient groups in two splits, class balance per "
        "split, undecodable images. Writes OUT/audit.md, OUT/audit.json and pictures; thumbnails and hashes are "
        "cached in OUT/cache, so a rerun reads only new or changed files. The split is the one `fptplus train` "
        "would use with the same data flags.",
        formatter_class=FORMATTER,
    )
    p.add_argument("--out", help="report folder (default: ./audit-DATANAME; never inside the dataset)")
    p.add_argument("--run", help="a trained run folder whose test AUC the report compares with")
    p.add_argument("--threshold", type=float, default=0.75, help="family AUC that raises a shortcut warning")
    p.add_argument("--max-distance", type=int, default=4,
                   help="near-duplicates: largest Hamming distance of the 64-bit perceptual hashes")  # fmt: skip
    p.add_argument("--min-correlation", type=float, default=0.97,
                   help="near-duplicates: smallest correlation of their grey 64 px thumbnails")  # fmt: skip
    p.add_argument("--min-per-split", type=int, default=10, help="warn about classes with fewer images in a split")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples of each AUC's CI (0: none)")
    p.add_argument("--num-workers", type=int, default=2, help="processes decoding images")
    skip = tuple(f.name for f in dataclasses.fields(DataConfig) if f.name not in DATA_FIELDS)
    add_dataclass_flags(p, DataConfig, "data", skip=skip)
    p.set_defaults(func=cmd_audit)
