"""`fptplus train / evaluate / predict`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import DataConfig, RunConfig, TrainConfig, add_dataclass_flags, build_dataclass, given
from ..errors import ConfigError
from ..methods import Method
from .common import FORMATTER, add_model_flags, model_from_args, parse_seeds, require_weights

RESUME_OK = {"num_workers", "log_every"}


def cmd_train(args: argparse.Namespace, method: Method) -> int:
    if args.resume:
        from ..trainer.run import resume_config
        from ..workflow import train

        cfg, seeds = resume_config(args.resume)
        changed = set(given(args, DataConfig)) | set(given(args, TrainConfig)) | set(given(args, method.config_cls))
        flags = sorted("--" + name.replace("_", "-") for name in changed - RESUME_OK)
        flags += [f"--set {s}" for s in args.set]
        extra = [("--config", args.config), ("--out", args.out), ("--seeds", args.seeds),
                 ("--overwrite", args.overwrite), ("--method", getattr(args, "given_method", False))]  # fmt: skip
        flags += [flag for flag, value in extra if value]
        if flags:
            raise ConfigError(f"--resume continues {args.resume} as it was configured (its method, seeds, folder "
                              f"and settings); drop {', '.join(flags)} — start a new run with --out to change "
                              "them")  # fmt: skip
        for key in RESUME_OK & set(given(args, TrainConfig)):
            setattr(cfg.train, key, getattr(args, key))
        train(cfg, args.resume, seeds, resume=True)
        return 0
    if not args.out:
        raise ConfigError("pass --out RUN_FOLDER (or --resume RUN_FOLDER)")
    cfg = config_from_args(args, method)  # a bad flag value is refused before torch loads
    from ..workflow import train

    train(cfg, args.out, args.seeds, overwrite=args.overwrite)
    return 0


def config_from_args(args: argparse.Namespace, method: Method) -> RunConfig:
    """defaults < --config YAML < flags (the same method's model section only)."""
    base = RunConfig.load(args.config).to_dict() if args.config else {"model": {}, "data": {}, "train": {}}
    same_method = base.get("method", method.name) == method.name
    cfg = RunConfig(
        method=method.name,
        model=model_from_args(args, method, base["model"] if same_method else {}),
        data=build_dataclass(DataConfig, {**base["data"], **given(args, DataConfig)}, "data"),
        train=build_dataclass(TrainConfig, {**base["train"], **given(args, TrainConfig)}, "train"),
    )
    cfg.data.check_path()
    require_weights(cfg.model)
    return cfg


def cmd_tune(args: argparse.Namespace, method: Method) -> int:
    import os

    cfg = config_from_args(args, method)  # a bad flag value is refused before torch and optuna load
    from ..tune import tune

    heartbeat = int(os.environ.get("FPTPLUS_TUNE_HEARTBEAT", "30"))  # tests shorten it
    r = tune(cfg, args.out, args.trials, args.timeout, args.study_seed, heartbeat)
    print(f"best validation AUC {100 * r.best_value:.2f} with {r.best_params}; config: {r.best_config}")
    return 0


def add_tune_parser(sub, method: Method) -> None:
    p = sub.add_parser(
        "tune",
        help="hyper-parameter search over one feature store (Optuna, resumable)",
        description="Searches the fields one feature store serves (learning rate, weight decay; FPT/FPT+: "
        "fusion dropout,"
        " number of prompts; FPT+ with the paper's selection: the token ratio 0.1/0.2/0.4 and how many of the"
        " top layers are fused) with Optuna's TPE sampler and median pruning on each epoch's validation AUC. "
        "Every trial trains from one store, built first at the largest ratio and layers searched. Rerun the "
        "same command to continue the study (a killed trial is run again; finished ones never). With --folds "
        "K each trial is a K-fold cross-validation scored by its mean validation AUC (steadier on small "
        "validation sets; K times slower; no pruning). Writes OUT/trials.csv, OUT/best/config.yaml, "
        "OUT/history.png. Other settings are taken as for `fptplus train` (defaults < --config < flags).",
        formatter_class=FORMATTER,
    )
    p.add_argument("--out", required=True, help="study folder (created, or continued)")
    p.add_argument("--trials", type=int, default=30, help="finished + pruned trials to reach (over all runs)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--study-seed", type=int, default=0, help="seed of the TPE sampler")
    add_run_config_flags(p, method)
    p.set_defaults(func=cmd_tune)


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
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that holds a run (its run files are removed; its store is kept and "
                   "reused only if it matches) or other files (kept, unless a run file has the same name)")  # fmt: skip
    p.add_argument(
        "--seeds", type=parse_seeds, default=None, help="repeat for these seeds (e.g. 0,1,2,3,4): mean ± std"
    )
    add_run_config_flags(p, method)
    p.set_defaults(func=cmd_train)


def add_run_config_flags(p: argparse.ArgumentParser, method: Method) -> None:
    """--config and every data, training and model flag (what `config_from_args` reads), for train and tune."""
    p.add_argument("--config", help="YAML with method/model/data/train sections (e.g. a run's config.yaml)")
    add_dataclass_flags(p, DataConfig, "data")
    add_dataclass_flags(p, TrainConfig, "training")
    add_model_flags(p, method)


def cmd_evaluate(args: argparse.Namespace, method: Method) -> int:
    from ..workflow import evaluate

    evaluate(args.run, args.split, args.checkpoint, args.seed)
    return 0


def cmd_predict(args: argparse.Namespace, method: Method) -> int:
    import sys

    from ..trainer.evaluate import predict, skipped_path, write_predictions, write_skipped
    from ..trainer.runfolder import check_output_file

    if args.out:  # before any image is read: never over a run's, a store's or an existing file
        check_output_file(args.out, args.overwrite)
        check_output_file(skipped_path(args.out), args.overwrite, "--out (its .skipped.csv)")
    result = predict(args.run, args.images, args.checkpoint, args.seed, args.batch_size, args.skip_bad,
                     args.num_workers, args.calibrated, args.decision, args.engine)  # fmt: skip
    rows = result.rows
    if args.out and rows:
        write_predictions(rows, args.out)
        print(f"{len(rows)} predictions written to {args.out}")
    elif args.out:
        print(f"no image could be decoded; {args.out} not written", file=sys.stderr)
    else:
        for r in rows:
            probs = "  ".join(f"{k[5:]}={v:.4f}" for k, v in r.items() if k.startswith("prob_"))
            print(f"{r['path']}\t{r['prediction']}\t{probs}")
    if result.skipped:
        where = ""
        if args.out:
            write_skipped(result.skipped, skipped_path(args.out))
            where = f" (listed in {skipped_path(args.out)})"
        print(f"skipped {len(result.skipped)} undecodable images{where}:", file=sys.stderr)
        for s in result.skipped:
            print(f"  {s['error']}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace, method: Method) -> int:
    from ..trainer.export import export_onnx

    r = export_onnx(args.run, args.out, args.checkpoint, args.seed, args.tolerance, args.overwrite)
    shapes = ", ".join(f"{n} (batch, {', '.join(map(str, s))})" for n, s in r.inputs.items())
    print(f"exported {r.path} (inputs: {shapes}; output: logits); sidecar {Path(r.path).with_suffix('.json')}")
    print(f"onnxruntime vs PyTorch: max |logit difference| {r.max_abs_logit_diff:.2e}; CPU throughput "
          f"{r.onnxruntime_img_per_s:.3g} img/s (PyTorch {r.torch_img_per_s:.3g} img/s, small batch)")  # fmt: skip
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
    p.add_argument("--num-workers", type=int, default=2,
                   help="processes decoding the next images while the model runs (0: in this process)")  # fmt: skip
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable images instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--engine", default="torch", choices=["torch", "openvino", "onnxruntime", "auto"],
                   help="what runs an FPT/FPT+ model's frozen pass: PyTorch, or its graph exported once (cached) "
                   "to OpenVINO or onnxruntime, checked against PyTorch's logits on the first batch; auto: the "
                   "first that is installed and agrees, else torch")  # fmt: skip
    p.add_argument(
        "--calibrated",
        action="store_true",
        help="probabilities scaled by the temperature fitted on validation (the run's calibration.json)",
    )
    p.add_argument("--decision", default="argmax", choices=["argmax", "threshold"],
                   help="the predicted class: the most probable one, or (binary) the positive class when its "
                        "probability reaches the threshold chosen on validation (train --threshold)")  # fmt: skip
    p.set_defaults(func=cmd_predict)
    x = sub.add_parser("export", help="the trained model as an ONNX file, checked in onnxruntime",
                       formatter_class=FORMATTER)  # fmt: skip
    x.add_argument("run", help="run folder (the --out of `fptplus train`)")
    x.add_argument("--out", required=True, help="the .onnx file (a sidecar .json with classes and inputs is added)")
    x.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint")
    x.add_argument("--seed", type=int, default=None, help="which seed of a multi-seed run (default: the first)")
    x.add_argument("--tolerance", type=float, default=1e-4, help="largest |logit difference| ONNX vs PyTorch")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    x.set_defaults(func=cmd_export)
