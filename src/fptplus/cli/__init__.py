"""`fptplus` command line: a thin layer that parses arguments and calls the library.

Model, data and training flags are generated from the typed config dataclasses, so `--help` lists every
field with its default; `fptplus COMMAND --method NAME --help` shows that method's model fields.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import FPTPlusError
from ..logs import cli_output
from ..methods import Method, get_method
from .app import add_app_parser
from .audit import add_audit_parser
from .bench import add_bench_parsers
from .common import FORMATTER, method_of
from .compare import add_compare_parser
from .demo import add_demo_parser
from .explain import add_explain_parser
from .params import add_params_parser
from .preload import add_preload_parser
from .train import add_run_parsers, add_train_parser, add_tune_parser


class Parser(argparse.ArgumentParser):
    """A mistyped option is one line naming it (not the whole usage first), then where the options are listed."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists every option)\n")


def build_parser(method: Method | None = None) -> argparse.ArgumentParser:
    method = method or get_method("fpt_plus")
    parser = Parser(
        prog="fptplus",
        description="FPT+: parameter- and memory-efficient transfer learning for high-resolution medical images.",
        formatter_class=FORMATTER,
        epilog="-q/--quiet (warnings only) or -v/--verbose (debug lines too) may follow any command.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_params_parser(sub, method)
    add_preload_parser(sub, method)
    add_train_parser(sub, method)
    add_tune_parser(sub, method)
    add_run_parsers(sub)
    add_compare_parser(sub)
    add_bench_parsers(sub)
    add_explain_parser(sub)
    add_demo_parser(sub)
    add_audit_parser(sub)
    add_app_parser(sub)
    return parser


VERBOSITY = {"-q": logging.WARNING, "--quiet": logging.WARNING, "-v": logging.DEBUG, "--verbose": logging.DEBUG}


def run(argv: Sequence[str]) -> int:
    """One command line, in this process; fptplus's own errors propagate (for callers such as `bench plan`).

    `-q/--quiet` (warnings only) and `-v/--verbose` (debug lines too) may stand anywhere on the line.
    """
    argv = list(argv)
    level = logging.INFO
    for flag, value in VERBOSITY.items():
        while flag in argv:
            argv.remove(flag)
            level = value
    with cli_output(level):
        method = method_of(argv)
        args = build_parser(method).parse_args(argv)
        return args.func(args, method)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "?"
    try:
        return run(argv)
    except FPTPlusError as err:
        print(f"fptplus {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fptplus {command}: interrupted; rerun the same command to continue (stores and runs resume)",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())
