"""Subcommands `benchmark` (compute cost of nnU-Net's default network, LM-Net and LGMSNet on the same plans) and
`benchmark-predict` (end-to-end CPU prediction time per case).

Only argparse and the standard library are imported here; the rest is imported by the functions that need
it, so `nnunet-lmnet --help` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path


# --------------------------------------------------------------------------------------------------- benchmark
def _run_benchmark(args: argparse.Namespace) -> int:
    from .compute import check_device, markdown_report, report_paths, resolve_inputs, run_benchmark, write_report
    from ..report_output import refuse_existing

    inputs = resolve_inputs(dataset=args.dataset, plans_name=args.plans_name, plans_file=args.plans,
                            synthetic=args.synthetic, configuration=args.configuration, patch_size=args.patch,
                            batch_size=args.batch_size, in_channels=args.in_channels, classes=args.classes)
    label = inputs.pop("label")
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    out = Path(args.out) if args.out else Path("benchmarks") / f"{label}__{device}"
    refuse_existing(report_paths(out), args.overwrite)  # before minutes of measuring, not after
    result = run_benchmark(**inputs, archs=args.archs, device=device, repeats=args.repeats, warmup=args.warmup,
                           threads=args.threads, compile_network=args.compile, interleaved=args.interleaved)
    paths = write_report(result, out, args.overwrite)
    print(markdown_report(result))
    print(f"Written to {paths[0]} and {paths[1]}")
    return 0


def _add_benchmark(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="parameters, MACs, training-step and inference time, peak memory of nnU-Net's default network, "
             "LM-Net and LGMSNet on the same plans configuration",
        description="Builds each network from one plans configuration (nnU-Net's own network as 'default', ours as "
                    "the trainers derive them) and measures, each in a fresh process: parameters, MACs/FLOPs at the "
                    "patch, forward+backward+SGD step at the plans' batch size with nnU-Net's loss, inference time "
                    "per patch (batch 1, fused LM-Net), peak memory. Medians after warm-up, ratios to 'default' from "
                    "the same run. Writes benchmark.json and benchmark.md and prints the table.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-d", "--dataset", help="preprocessed dataset (id or name): reads "
                                             "$nnUNet_preprocessed/<Dataset>/<PLANS>.json and dataset.json")
    src.add_argument("--plans", metavar="FILE", help="any nnU-Net plans .json (a dataset.json next to it is used "
                                                     "for the channels)")
    src.add_argument("--synthetic", choices=["2d", "3d"],
                     help="built-in nnU-Net default plans without a dataset: 2d = 256x256 (batch 49), 3d = "
                          "128x128x128 (batch 2) at isotropic spacing; strides, kernels and batch size as nnU-Net's "
                          "planner gives them (its cap at 5%% of a dataset's voxels does not apply)")
    p.add_argument("-c", "--configuration", default=None,
                   help="configuration in the plans, e.g. 2d or 3d_fullres (required with -d / --plans)")
    p.add_argument("-p", "--plans-name", default="nnUNetPlans", metavar="PLANS",
                   help="plans identifier for -d (default: nnUNetPlans)")
    from .compute import ARCHS  # standard library only at import time

    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS),
                   help="networks to measure (default: all); ratios need 'default'")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions, median reported (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per network (default: torch's default)")
    p.add_argument("--patch", type=int, nargs="+", default=None, help="override the patch size")
    p.add_argument("--batch-size", type=int, default=None, help="override the batch size")
    p.add_argument("--in-channels", type=int, default=None,
                   help="input channels (default: from dataset.json, else 1)")
    p.add_argument("--classes", type=int, default=None,
                   help="network outputs incl. background (default: nnU-Net's segmentation heads from dataset.json, "
                        "else 2)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step, as nnU-Net does on CUDA")
    p.add_argument("--interleaved", action="store_true",
                   help="all networks in one process, timed round by round (--repeats rounds, order reversed every "
                        "other round) with paired ratios: the way to compare times on a shared, noisy machine; "
                        "no peak memory (one process holds every network)")
    p.add_argument("--out", default=None, help="output folder (default: ./benchmarks/<plans or synthetic>__<device>)")
    p.add_argument("--overwrite", action="store_true", help="replace benchmark.json / benchmark.md if they exist")
    p.set_defaults(func=_run_benchmark)


# --------------------------------------------------------------------------------------------------- benchmark-predict
def _run_benchmark_predict(args: argparse.Namespace) -> int:
    from ..inference.model_folder import check_model_folder, locate_model_folder
    from ..report_output import refuse_existing
    from .predict_benchmark import markdown_report, report_paths, run_predict_benchmark, write_report

    out = Path(args.out) if args.out else Path("benchmarks") / f"predict__{args.dataset}__{args.configuration}"
    refuse_existing(report_paths(out), args.overwrite)  # before minutes of measuring, not after
    ours = check_model_folder(locate_model_folder(args.dataset, args.configuration, args.trainer, args.plans),
                              args.folds, args.checkpoint)
    default = check_model_folder(locate_model_folder(args.dataset, args.configuration, args.default_trainer,
                                                     args.default_plans), args.folds, args.checkpoint)
    result = run_predict_benchmark(Path(args.input), default, ours, onnx_files=args.onnx, repeats=args.repeats,
                                   threads=args.threads, step_size=args.step_size,
                                   with_onnxruntime=not args.no_onnxruntime)
    paths = write_report(result, out, args.overwrite)
    print(markdown_report(result))
    print(f"Written to {paths[0]} and {paths[1]}")
    return 0


def _add_benchmark_predict(sub) -> None:
    p = sub.add_parser(
        "benchmark-predict",
        help="end-to-end CPU prediction time per case: nnU-Net's default network vs ours on PyTorch and ONNX "
             "Runtime, with and without mirroring",
        description="Times nnU-Net's own prediction steps per case (preprocessing, sliding-window network with "
                    "or without mirroring, export) for the default network (PyTorch), ours (PyTorch) and ours "
                    "(ONNX Runtime), interleaved in one process, and writes benchmark_predict.json and "
                    "benchmark_predict.md with medians and ratios to the default network. Both models must be "
                    "trained on the same dataset and configuration.",
    )
    p.add_argument("-i", dest="input", required=True, help="input images (nnU-Net naming, CASE_0000<ending>)")
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    p.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 2d or 3d_fullres")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainerLMNet", help="our trainer (default: "
                                                                            "nnUNetTrainerLMNet)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans of our model (default: nnUNetPlans)")
    p.add_argument("--default-trainer", default="nnUNetTrainer", help="trainer of the default-network model "
                                                                      "(default: nnUNetTrainer)")
    p.add_argument("--default-plans", default="nnUNetPlans", help="plans of the default-network model")
    p.add_argument("-f", dest="folds", nargs="+", default=["0"], metavar="FOLD",
                   help="folds (both models; default: 0)")
    p.add_argument("-chk", "--checkpoint", dest="checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file name (default: checkpoint_final.pth)")
    p.add_argument("--onnx", nargs="+", default=None, metavar="FILE",
                   help="our model exported with export-onnx, one file per fold (default: export now)")
    p.add_argument("--no-onnxruntime", action="store_true", help="only the PyTorch runs (no deploy extra needed)")
    p.add_argument("--repeats", type=int, default=3, help="passes over all cases (default 3); medians reported")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--step_size", type=float, default=0.5, help="sliding-window step (default 0.5)")
    p.add_argument("--out", default=None, help="output folder (default: ./benchmarks/predict__<D>__<CFG>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")
    p.set_defaults(func=_run_benchmark_predict)


# --------------------------------------------------------------------------------------------------- registration
def add_parser(subparsers) -> None:
    """Register this module's subcommands on the main CLI's argparse subparsers."""
    _add_benchmark(subparsers)
    _add_benchmark_predict(subparsers)
