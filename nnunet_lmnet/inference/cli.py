"""Subcommand `predict`: nnUNetv2_predict's pipeline with the network on PyTorch or ONNX Runtime.

Only argparse and the standard library are imported here; the rest is imported by the functions that need
it, so `nnunet-lmnet --help` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_types import non_negative_int, positive_int


def _run_predict(args: argparse.Namespace) -> int:
    from .model_folder import check_model_folder, locate_model_folder
    from .predict import run_prediction

    folder = locate_model_folder(args.dataset, args.configuration, args.trainer, args.plans)
    model = check_model_folder(folder, args.folds, args.checkpoint)
    cases = run_prediction(
        Path(args.input), Path(args.output), model, backend=args.backend, device=args.device,
        step_size=args.step_size, use_mirroring=not args.disable_tta, num_processes_preprocessing=args.npp,
        num_processes_export=args.nps, save_probabilities=args.save_probabilities,
        continue_prediction=args.continue_prediction, onnx_files=args.onnx,
        prev_stage_predictions=Path(args.prev_stage_predictions) if args.prev_stage_predictions else None,
        threads=args.threads, verbose=args.verbose)
    print(f"Predicted {len(cases)} case(s) with {args.backend} into {args.output}")
    return 0


def _add_predict(sub) -> None:
    from .predict import BACKENDS

    p = sub.add_parser(
        "predict",
        help="nnUNetv2_predict with the network on PyTorch or ONNX Runtime (same preprocessing, sliding window, "
             "mirroring, export and fold ensemble)",
        description="Runs nnU-Net's own predictor (nnUNetPredictor, set up as nnUNetv2_predict does) on a folder "
                    "of images named CASE_0000<ending>, CASE_0001<ending> ... With --backend onnxruntime the "
                    "network is an ONNX Runtime session per fold: the files of --onnx (from `nnunet-lmnet "
                    "export-onnx`, one per fold), or exported now at the planned patch.",
    )
    p.add_argument("-i", dest="input", required=True, help="input folder (nnU-Net naming, as for nnUNetv2_predict)")
    p.add_argument("-o", dest="output", required=True, help="output folder (created if missing)")
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    p.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 2d or 3d_fullres")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer (default: nnUNetTrainer)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-f", dest="folds", nargs="+", default=["0", "1", "2", "3", "4"], metavar="FOLD",
                   help="folds to ensemble, numbers or 'all' (default: 0 1 2 3 4)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs the network (default: torch); onnxruntime needs "
                        "pip install 'nnunet-lmnet[deploy]'")
    p.add_argument("--onnx", nargs="+", default=None, metavar="FILE",
                   help="with --backend onnxruntime: exported files, one per fold in the order of -f (checked "
                        "against each fold's checkpoint); default: export each fold now")
    p.add_argument("-chk", "--checkpoint", dest="checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file name in each fold folder (default: checkpoint_final.pth)")
    p.add_argument("--step_size", "-step_size", dest="step_size", type=float, default=0.5,
                   help="sliding-window step as a fraction of the patch (default 0.5, as nnU-Net)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring (faster, less accurate)")
    p.add_argument("--save_probabilities", action="store_true", help="also write the softmax (.npz)")
    p.add_argument("--continue_prediction", action="store_true", help="skip cases already predicted")
    p.add_argument("-device", "--device", dest="device", choices=["cpu", "cuda"], default="cpu",
                   help="torch device (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: as nnUNetv2_predict, all cores on CPU, 1 with CUDA); ONNX "
                        "Runtime gets the threads nnU-Net gives torch while predicting")
    p.add_argument("-npp", dest="npp", type=non_negative_int, default=3,
                   help="preprocessing processes (default 3; -npp 0 -nps 0 runs everything in this process)")
    p.add_argument("-nps", dest="nps", type=non_negative_int, default=3,
                   help="segmentation export processes (default 3)")
    p.add_argument("-prev_stage_predictions", "--prev_stage_predictions", dest="prev_stage_predictions",
                   default=None, help="cascade: folder with the low-resolution stage's predictions")
    p.add_argument("--verbose", action="store_true", help="nnU-Net's verbose output and progress bars")
    p.set_defaults(func=_run_predict)


def add_parser(subparsers) -> None:
    """Register this module's subcommands on the main CLI's argparse subparsers."""
    _add_predict(subparsers)
