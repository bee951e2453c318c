"""Subcommand `compare`: trainers' cross-validation results side by side, with paired tests.

Only argparse and the standard library are imported here; the rest is imported by the functions that need
it, so `nnunet-lmnet --help` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def _fold_list(values):
    from ..nnunet_paths import parse_folds

    return parse_folds(values)


# --------------------------------------------------------------------------------------------------- compare
def _run_compare(args: argparse.Namespace) -> int:
    from .compare import CompareOptions, run_compare

    opts = CompareOptions(
        dataset=args.dataset, configuration=args.configuration, trainers=list(args.trainers), plans=args.plans,
        folds=_fold_list(args.folds), out=Path(args.out) if args.out else None, overwrite=args.overwrite,
        flops=args.flops, boundary=args.boundary, nsd_tolerance=args.nsd_tolerance,
        gt_folder=Path(args.gt_folder) if args.gt_folder else None, num_processes=max(1, args.num_processes),
        plot=not args.no_plot,
    )
    result = run_compare(opts)
    print(result.markdown)
    print(f"Written to {result.out_dir}")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare trainers' cross-validation results (Dice/IoU, paired Wilcoxon tests, optional HD95/NSD, "
             "parameters, FLOPs)",
        description="Reads fold_<k>/validation/summary.json of each trainer under "
                    "$nnUNet_results/<Dataset>/<trainer>__<plans>__<configuration>/ and writes comparison.md, "
                    "comparison.csv, paired_tests.csv, per_case.csv and dice_per_case.png. The first -tr trainer is "
                    "the reference of the paired tests. Missing folds are listed, not fatal.",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name (e.g. 42 or Dataset042_ISIC2018)")
    p.add_argument("-c", "--configuration", required=True, help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    p.add_argument("-tr", "--trainers", nargs="+", required=True, metavar="TRAINER",
                   help="trainer class names; the first one is the reference, e.g. nnUNetTrainer "
                        "nnUNetTrainerLMNet nnUNetTrainerLGMSNet")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-f", "--folds", nargs="+", default=None, metavar="FOLD",
                   help="folds to read (default: 0 1 2 3 4)")
    p.add_argument("--out", default=None,
                   help="output folder (default: $nnUNet_results/<Dataset>/comparison_<configuration>/; "
                        "comparison_<plans>__<configuration> for non-default plans)")
    p.add_argument("--overwrite", action="store_true", help="replace this command's output files if they exist")
    p.add_argument("--flops", action="store_true",
                   help="also count MACs/FLOPs at the plans' patch size (rebuilds each network; needs the trainer "
                        "classes to be importable)")
    p.add_argument("--boundary", action="store_true",
                   help="also compute HD95 and normalised surface Dice from the validation predictions "
                        "(needs MONAI and the reference segmentations)")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, metavar="MM",
                   help="NSD tolerance in mm (pixels for 2D natural images); default 2")
    p.add_argument("--gt-folder", default=None,
                   help="reference segmentations for --boundary (default: "
                        "$nnUNet_preprocessed/<Dataset>/gt_segmentations, then the paths in summary.json)")
    p.add_argument("-np", "--num-processes", type=int, default=1,
                   help="processes for --boundary (default 1)")
    p.add_argument("--no-plot", action="store_true", help="do not write dice_per_case.png")
    p.set_defaults(func=_run_compare)


# --------------------------------------------------------------------------------------------------- registration
def add_parser(subparsers) -> None:
    """Register this module's subcommands on the main CLI's argparse subparsers."""
    _add_compare(subparsers)
