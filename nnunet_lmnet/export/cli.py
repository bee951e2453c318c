"""Subcommands `export-submission`, `model-card` and `export-onnx`: what leaves the results folder.

Only argparse and the standard library are imported here; the rest is imported by the functions that need
it, so `nnunet-lmnet --help` stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path

SUBMISSION_CHALLENGES = ("isic2018", "kits23", "btcv", "generic")


def _fold_list(values):
    from ..nnunet_paths import parse_folds

    return parse_folds(values)


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


# --------------------------------------------------------------------------------------------------- export-onnx
def _run_export_onnx(args: argparse.Namespace) -> int:
    from ..inference.model_folder import locate_model_folder
    from .onnx_export import export_onnx

    folder = locate_model_folder(args.dataset, args.configuration, args.trainer, args.plans)
    out = export_onnx(folder, args.fold, Path(args.output), checkpoint=args.checkpoint, spatial=args.spatial,
                      tolerance=args.tolerance, overwrite=args.overwrite, target=args.target)
    print(f"Written to {out}")
    return 0


def _add_export_onnx(sub) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="export a trained fold's network to ONNX (as nnU-Net's predictor builds it), checked in ONNX Runtime",
        description="Builds the network as nnUNetv2_predict does (deep supervision off, LM-Net fused), loads the "
                    "fold's checkpoint and exports it with torch.export (dynamic batch axis; spatial axes dynamic "
                    "as multiples of the network's total stride unless --spatial fixed). ONNX Runtime is run on a "
                    "random input at the planned patch; the file is written only if its output matches "
                    "PyTorch's within --tolerance (relative to the largest logit). The plans, dataset.json, patch "
                    "size, mirror axes and stride are recorded in the ONNX metadata (keys nnunet_lmnet.*). "
                    "Needs pip install 'nnunet-lmnet[deploy]'.",
    )
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    p.add_argument("-c", dest="configuration", required=True, help="configuration, e.g. 2d or 3d_fullres")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainer", help="trainer (default: nnUNetTrainer)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-f", dest="fold", required=True, help="the fold to export (a number or 'all')")
    p.add_argument("--checkpoint", "-chk", dest="checkpoint", default="checkpoint_final.pth",
                   help="checkpoint file in the fold folder (default: checkpoint_final.pth)")
    p.add_argument("-o", dest="output", required=True, metavar="OUT.onnx", help="ONNX file to write")
    p.add_argument("--spatial", choices=["dynamic", "fixed"], default="dynamic",
                   help="dynamic: any size that is a multiple of the total stride (default); fixed: the planned "
                        "patch only (what nnU-Net's sliding window feeds; exports 2-4x faster)")
    from .onnx_fusions import DEFAULT_TARGET, TARGETS  # standard library only at import time

    p.add_argument("--target", choices=TARGETS, default=DEFAULT_TARGET,
                   help="onnxruntime: with ONNX Runtime's fused operators (com.microsoft MultiHeadAttention, "
                        "SkipLayerNormalization, ...), faster, runs in ONNX Runtime only (default); standard: "
                        "standard ONNX operators only, for other runtimes")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted ONNX Runtime vs PyTorch difference, relative (default 1e-4)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.onnx if it exists")
    p.set_defaults(func=_run_export_onnx)


# --------------------------------------------------------------------------------------------------- registration
def add_parser(subparsers) -> None:
    """Register this module's subcommands on the main CLI's argparse subparsers."""
    _add_export(subparsers)
    _add_model_card(subparsers)
    _add_export_onnx(subparsers)
