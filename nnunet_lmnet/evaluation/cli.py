"""Subcommands `compare` (trainers' cross-validation results side by side, with paired tests) and
`cross-evaluate` (zero-shot evaluation of trained models on an unseen dataset).

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
        help="compare trainers' cross-validation results (Dice, IoU, precision, recall, accuracy, RAD; paired "
             "Wilcoxon tests with Holm correction and bootstrap CIs; optional HD95/NSD, parameters, FLOPs)",
        description="Reads fold_<k>/validation/summary.json of each trainer under "
                    "$nnUNet_results/<Dataset>/<trainer>__<plans>__<configuration>/ and writes comparison.md, "
                    "comparison.csv, paired_tests.csv, per_case.csv and dice_per_case.png. The first -tr trainer is "
                    "the reference of the paired tests. Trainers are compared on the folds and validation cases "
                    "they all have; missing and left-out folds and cases are listed.",
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


# --------------------------------------------------------------------------------------------------- cross-evaluate
def _run_cross_evaluate(args: argparse.Namespace) -> int:
    from .cross_evaluate import CrossEvaluateOptions, run_cross_evaluate

    for flag, value in (("-npp", args.npp), ("-nps", args.nps), ("-np", args.num_processes)):
        if value < 0:
            from ..errors import UserError

            raise UserError(f"{flag} must be >= 0, got {value}.")
    opts = CrossEvaluateOptions(
        dataset=args.dataset, configuration=args.configuration, trainers=list(args.trainers), target=args.target,
        plans=args.plans, folds=_fold_list(args.folds), checkpoint=args.checkpoint, target_split=args.target_split,
        out=Path(args.out) if args.out else None, overwrite=args.overwrite, device=args.device,
        num_processes_preprocessing=args.npp, num_processes_export=args.nps,
        num_processes_eval=max(1, args.num_processes), disable_tta=args.disable_tta, plot=not args.no_plot,
    )
    result = run_cross_evaluate(opts)
    print(result.markdown)
    print(f"Written to {result.out_dir}")
    return 0


def _add_cross_evaluate(sub) -> None:
    p = sub.add_parser(
        "cross-evaluate",
        help="zero-shot evaluation: models trained on one dataset predict and score an unseen dataset "
             "(LGMSNet Table 2)",
        description="Predicts the target's imagesTs/ (else imagesTr/) with each trainer's model of the source "
                    "dataset (nnU-Net's predictor, the source's plans; the -f folds ensembled), scores them against "
                    "labelsTs/ (labelsTr/) with nnU-Net's evaluation, and writes cross_evaluation.md/.csv, "
                    "paired_tests.csv, per_case.csv, dice_per_case.png and predictions/<trainer>/ into "
                    "$nnUNet_results/<SOURCE>/cross_evaluation_<configuration>__<TARGET>/. Channel count and "
                    "label values are checked before anything is predicted.",
    )
    p.add_argument("-d", "--dataset", required=True, help="source dataset (the one the models were trained on)")
    p.add_argument("-c", "--configuration", required=True, help="nnU-Net configuration, e.g. 2d")
    p.add_argument("-tr", "--trainers", nargs="+", required=True, metavar="TRAINER",
                   help="trainer class names; the first one is the reference of the paired tests")
    p.add_argument("--target", required=True,
                   help="target dataset: id or name in $nnUNet_raw, or its folder (needs dataset.json)")
    p.add_argument("--target-split", choices=["auto", "test", "train"], default="auto",
                   help="auto (default): imagesTs/+labelsTs/, else imagesTr/+labelsTr/; test or train to insist")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-f", "--folds", nargs="+", default=None, metavar="FOLD",
                   help="folds to ensemble, as nnUNetv2_predict -f (default: 0 1 2 3 4)")
    p.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file name (default: checkpoint_final.pth)")
    p.add_argument("--out", default=None,
                   help="output folder (default: $nnUNet_results/<SOURCE>/cross_evaluation_<configuration>__<TARGET>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace this command's report files and the predictions of the given trainers")
    p.add_argument("-device", "--device", choices=["auto", "cuda", "cpu", "mps"], default="auto",
                   help="device for prediction (default: cuda if available, else cpu)")
    p.add_argument("-npp", type=int, default=3, help="processes for preprocessing (default 3; -npp 0 -nps 0 "
                                                     "predicts in this process, as nnUNetv2_predict)")
    p.add_argument("-nps", type=int, default=3, help="processes for resampling/export (default 3)")
    p.add_argument("-np", "--num-processes", type=int, default=3, help="processes for scoring (default 3)")
    p.add_argument("--disable-tta", action="store_true", help="no test-time mirroring (as nnUNetv2_predict)")
    p.add_argument("--no-plot", action="store_true", help="do not write dice_per_case.png")
    p.set_defaults(func=_run_cross_evaluate)


# --------------------------------------------------------------------------------------------------- registration
def add_parser(subparsers) -> None:
    """Register this module's subcommands on the main CLI's argparse subparsers."""
    _add_compare(subparsers)
    _add_cross_evaluate(subparsers)
