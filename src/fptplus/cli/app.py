"""`fptplus app RUN`: the local page of a trained run (see `fptplus.app`)."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..methods import Method
from .common import FORMATTER


def cmd_app(args: argparse.Namespace, method: Method) -> int:
    from ..app import AppService, serve

    if args.max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    service = AppService(
        args.run, args.checkpoint, args.seed, decision=args.decision
    )  # a wrong run folder fails here, before serving
    server = serve(service, args.host, args.port, int(args.max_upload_mb * 2**20), args.quiet_requests,
                   tuple(args.allow_host))  # fmt: skip
    host, port = server.server_address[:2]
    print(f"fptplus app: {service.ex.run_dir} ({service.ex.cfg.method}) at http://{host}:{port}/ — Ctrl+C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("fptplus app: stopped")
    finally:
        server.server_close()
    return 0


def add_app_parser(sub) -> None:
    p = sub.add_parser(
        "app",
        help="a local web page to look at a trained run (upload images, overlays, split browser)",
        description="Serves one page for a trained run: upload images (JPEG/PNG/TIFF/DICOM, any size) and see the "
        "class probabilities and the predicted class (with the run's validation threshold for two classes), and for "
        "FPT/FPT+ the frozen model's selected tokens and the prompts' attention at any fused layer / head / prompt; "
        "download a batch's predictions as CSV; browse the test or val split's predictions, its errors, false "
        "positives and negatives; the run's ROC, confusion matrix and curves. The run's best checkpoint is loaded "
        "once; nothing is written to disk. Listens on 127.0.0.1 unless --host says otherwise.",
        formatter_class=FORMATTER,
    )
    p.add_argument("run", help="run folder (the --out of `fptplus train`; a fold's folder for --folds runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (0: any free one)")
    p.add_argument("--max-upload-mb", type=float, default=64, help="refuse uploads larger than this")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint")
    p.add_argument("--seed", type=int, default=None, help="which seed of a multi-seed run (default: the first)")
    p.add_argument("--decision", default="threshold", choices=["threshold", "argmax"],
                   help="predicted class: with the run's validation threshold (two classes, when it has one), or "
                   "the most probable class")  # fmt: skip
    p.add_argument("--quiet-requests", action="store_true", help="do not log each request")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name browsers use for this machine (requests addressed to other names are refused: "
                   "DNS rebinding); repeatable")  # fmt: skip
    p.set_defaults(func=cmd_app)
