"""Subcommands of the reporting part: `benchmark`, `compare`, `export-submission`, `model-card`.

Only argparse and the standard library are imported here; torch, nnunetv2, pandas, scipy and matplotlib are
imported by the functions that need them, so `nnunet-lmnet --help` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path

SUBMISSION_CHALLENGES = ("isic2018", "kits23", "btcv", "generic")


def _fold_list(values):
    from ._common import parse_folds

    return parse_folds(values)


# --------------------------------------------------------------------------------------------------- benchmark
def _run_benchmark(args: argparse.Namespace) -> int:
    from .compute import check_device, markdown_report, report_paths, resolve_inputs, run_benchmark, write_report
    from ._common import refuse_existing

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
                           threads=args.threads, compile_network=args.compile)
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
    p.add_argument("--out", default=None, help="output folder (default: ./benchmarks/<plans or synthetic>__<device>)")
    p.add_argument("--overwrite", action="store_true", help="replace benchmark.json / benchmark.md if they exist")
    p.set_defaults(func=_run_benchmark)


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


# --------------------------------------------------------------------------------------------------- export-submission
def _run_export(args: argparse.Namespace) -> int:
    from .submission import export_submission

    report = export_submission(
        args.challenge, Path(args.pred_dir), Path(args.out_dir),
        reference_images=Path(args.reference_images) if args.reference_images else None,
        overwrite=args.overwrite, make_zip=args.zip, file_ending=args.file_ending,
        labels=args.labels, name_template=args.name_template, resize_to_reference=args.resize_to_reference,
    )
    print(report)
    return 0


def _add_export(sub) -> None:
    from textwrap import dedent

    p = sub.add_parser(
        "export-submission",
        help="turn nnU-Net predictions into a challenge's submission format (isic2018, kits23, btcv, generic)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=dedent("""\
            Validates nnU-Net predictions and writes them in a challenge's submission format. PRED_DIR is never
            modified; OUT_DIR is built in a temporary folder and moved into place at the end.

            isic2018  ISIC 2018 Task 1: ISIC_<7 digits>_segmentation.png, 8-bit grayscale, 0 = background,
                      255 = lesion, same size as the input image. Predictions must hold labels 0/1.
                      --resize-to-reference scales masks of downscaled (--max-size) datasets back.
            kits23    KiTS23: case_<5 digits>.nii.gz label maps (0 background, 1 kidney, 2 tumor, 3 cyst) in the
                      geometry of the test image; the files are copied byte for byte.
            btcv      BTCV / Synapse multi-atlas abdomen: label<4 digits>.nii.gz maps with labels 0..13 (the
                      naming of the challenge's label files; check it against the current leaderboard rules).
            generic   copies the prediction files unchanged (optionally checking --labels and sizes).

            With --reference-images every reference image needs a prediction and every prediction a reference
            image, with the same size (and, for NIfTI, the same affine within 1e-3)."""),
    )
    p.add_argument("challenge", choices=SUBMISSION_CHALLENGES, help="target format")
    p.add_argument("pred_dir", metavar="PRED_DIR", help="folder with nnU-Net predictions (nnUNetv2_predict -o)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="submission folder to create")
    p.add_argument("--reference-images", default=None, metavar="DIR",
                   help="the challenge's test images (original or nnU-Net-named *_0000 files) to check "
                        "completeness, sizes and geometry")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR written by this command")
    p.add_argument("--zip", action="store_true", help="also write OUT_DIR.zip with the submission files")
    p.add_argument("--file-ending", default=None,
                   help="prediction file ending (default: from PRED_DIR/dataset.json, else the challenge's)")
    p.add_argument("--labels", type=int, nargs="+", default=None,
                   help="generic: allowed label values (default: no check)")
    p.add_argument("--name-template", default=None,
                   help="output file name with {case} and/or {num} (the case's last number), e.g. "
                        "'label{num:04d}.nii.gz'; overrides the challenge's naming")
    p.add_argument("--resize-to-reference", action="store_true",
                   help="isic2018: scale each mask (nearest neighbour) to the size of its --reference-images image, "
                        "for datasets converted with --max-size")
    p.set_defaults(func=_run_export)


# --------------------------------------------------------------------------------------------------- model-card
def _run_model_card(args: argparse.Namespace) -> int:
    from .model_card import write_model_card

    out, text = write_model_card(Path(args.model_folder), out=Path(args.out) if args.out else None,
                                 overwrite=args.overwrite, with_flops=args.flops, folds=_fold_list(args.folds))
    print(text)
    print(f"Written to {out}")
    return 0


def _add_model_card(sub) -> None:
    p = sub.add_parser(
        "model-card",
        help="write MODEL_CARD.md for a trained model folder (<trainer>__<plans>__<configuration>)",
        description="Describes dataset, splits, plans, trainer, versions, parameter count, optional FLOPs and the "
                    "cross-validation results of a trained nnU-Net model folder.",
    )
    p.add_argument("model_folder", metavar="MODEL_FOLDER",
                   help="$nnUNet_results/<Dataset>/<trainer>__<plans>__<configuration>")
    p.add_argument("--out", default=None, help="output file (default: MODEL_FOLDER/MODEL_CARD.md)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model card")
    p.add_argument("--flops", action="store_true", help="also count MACs/FLOPs at the plans' patch size")
    p.add_argument("-f", "--folds", nargs="+", default=None, metavar="FOLD", help="folds (default: 0 1 2 3 4)")
    p.set_defaults(func=_run_model_card)


# --------------------------------------------------------------------------------------------------- registration
def add_parser(subparsers) -> None:
    """Register this module's subcommands on the main CLI's argparse subparsers."""
    _add_benchmark(subparsers)
    _add_compare(subparsers)
    _add_export(subparsers)
    _add_model_card(subparsers)
