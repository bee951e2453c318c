"""``nnunet-lmnet derive-plans``: the plans route (stock ``nnUNetTrainer`` + ``-p nnUNetPlans_LMNet``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .presets import DISPLAY_NAMES, PRESETS


def default_target(arch: str, source: str = "nnUNetPlans") -> str:
    suffix = {"lmnet": "LMNet", "lgmsnet": "LGMSNet"}[arch]
    return f"{source}_{suffix}"


def derive_plans_file(dataset: str, arch: str, source: str = "nnUNetPlans", target: str | None = None,
                      overwrite: bool = False) -> Path:
    """Write `$nnUNet_preprocessed/<dataset>/<target>.json` describing `arch`; return its path."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from .derive import derive_plans

    if not os.environ.get("nnUNet_preprocessed"):
        raise UserError("nnUNet_preprocessed is not set: export it to the folder nnUNetv2_plan_and_preprocess "
                        "wrote to")
    target = target or default_target(arch, source)
    if "__" in target:
        raise UserError(f"plans name {target!r} must not contain '__' (nnU-Net splits result folder names on it)")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise UserError(f"{e} Run nnUNetv2_plan_and_preprocess for it first.") from None
    folder = Path(str(nnUNet_preprocessed)) / name
    src = folder / f"{source}.json"
    dst = folder / f"{target}.json"
    if not src.is_file():
        raise UserError(f"{src} not found: run nnUNetv2_plan_and_preprocess -d {dataset} first (or pass -s)")
    if dst.exists() and not overwrite:
        raise UserError(f"{dst} exists: pass --overwrite to replace it")
    try:
        plans = derive_plans(json.loads(src.read_text()), arch, plans_name=target)
    except ValueError as e:
        raise UserError(f"{src}: {e}") from None
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_text(json.dumps(plans, indent=4))
    tmp.replace(dst)
    return dst


def _derive(args) -> int:
    path = derive_plans_file(args.d, args.arch, args.s, args.t, args.overwrite)
    print(f"wrote {path}\nTrain the stock trainer with it, e.g.:\n"
          f"  nnUNetv2_train {args.d} 2d 0 -p {path.stem}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "derive-plans",
        help="write a plans file in which nnU-Net's network is LM-Net or LGMSNet (for the stock trainer, -p)",
        description="Derive a plans file from a preprocessed dataset's plans: every configuration's network becomes "
                    "the preset (widths/depth) with the plan's strides and kernels; data_identifier is kept, so the "
                    "preprocessed data is reused.",
    )
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("--arch", choices=sorted(PRESETS), required=True,
                   help=", ".join(f"{k}: {v}" for k, v in DISPLAY_NAMES.items()))
    p.add_argument("-s", default="nnUNetPlans", help="source plans name (default nnUNetPlans)")
    p.add_argument("-t", default=None, help="target plans name (default <source>_LMNet / <source>_LGMSNet)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_derive)
