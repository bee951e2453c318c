"""`nnunet-lmnet` command line: one subcommand per module.

Each module listed in SUBCOMMANDS defines ``add_parser(subparsers)``, which registers its parser and sets
``func`` (called with the parsed args; its return value is the exit code). Errors end in one line on stderr, not a
traceback (see :mod:`nnunet_lmnet.errors` for the exit codes). Those modules import torch and nnunetv2
inside their functions only, so that ``nnunet-lmnet trainer-path`` and ``--help`` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import EXIT_INTERRUPTED, EXIT_OS_ERROR, EXIT_USER_ERROR, UserError, os_error_message

SUBCOMMAND_MODULES = [
    "nnunet_lmnet.training.discovery",        # trainer-path, doctor
    "nnunet_lmnet.info",                      # info
    "nnunet_lmnet.demo",                      # demo
    "nnunet_lmnet.plans.cli",                 # derive-plans
    "nnunet_lmnet.dataset_conversion.cli",    # convert
    "nnunet_lmnet.benchmark.cli",             # benchmark
    "nnunet_lmnet.evaluation.cli",            # compare
    "nnunet_lmnet.export.cli",                # export-submission, model-card, export-onnx
    "nnunet_lmnet.inference.cli",             # predict
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-lmnet",
        description="LM-Net and LGMSNet for nnU-Net v2: discovery, network info, demo, plans, converters, reports.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a feature module not present in this build
            if e.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"nnunet-lmnet {args.command}"
    try:
        code = args.func(args)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted (Ctrl-C).", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        print(f"{prog}: error: {os_error_message(e)}", file=sys.stderr)
        return EXIT_OS_ERROR
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
