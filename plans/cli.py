"""``nnunet-lmnet derive-plans``: the plans route (stock ``nnUNetTrainer`` + ``-p nnUNetPlans_LMNet``)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from nnunet_lmnet.cli_types import dataset_id_or_name
from nnunet_lmnet.errors import UserError

from .presets import DISPLAY_NAMES, PRESETS


def default_target(arch: str, source: str = "nnUNetPlans", gpu_memory_target: float | None = None) -> str:
    """<source>_LMNet, or <source>_LMNet_24G for plans re-planned for a 24 GB memory target."""
    suffix = {"lmnet": "LMNet", "lgmsnet": "LGMSNet"}[arch]
    budget = "" if gpu_memory_target is None else f"_{gpu_memory_target:g}G"
    return f"{source}_{suffix}{budget}"


def derive_plans_file(dataset: str, arch: str, source: str = "nnUNetPlans", target: str | None = None,
                      overwrite: bool = False, gpu_memory_target: float | None = None) -> Path:
    """Write `$nnUNet_preprocessed/<dataset>/<target>.json` describing `arch`; return its path.

    With `gpu_memory_target` (GB), patch and batch are planned again for `arch` (``budget_planner``); without it
    they stay nnU-Net's."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from .derive import derive_plans

    if gpu_memory_target is not None and not (math.isfinite(gpu_memory_target) and gpu_memory_target > 0):
        raise UserError(f"--gpu-memory-target must be a positive number of GB (the GPU's memory), "
                        f"got {gpu_memory_target:g}")
    if not os.environ.get("nnUNet_preprocessed"):
        raise UserError("nnUNet_preprocessed is not set: export it to the folder nnUNetv2_plan_and_preprocess "
                        "wrote to")
    target = target or default_target(arch, source, gpu_memory_target)
    if "__" in target:
        raise UserError(f"plans name {target!r} must not contain '__' (nnU-Net splits result folder names on it)")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except ValueError:  # neither an integer nor a name starting with 'Dataset'
        raise UserError(f"dataset {dataset!r} is neither a dataset id (e.g. 501) nor a dataset name "
                        f"(e.g. Dataset501_KvasirSEG).") from None
    except RuntimeError as e:
        raise UserError(f"{e} Run nnUNetv2_plan_and_preprocess for it first.") from None
    folder = Path(str(nnUNet_preprocessed)) / name
    src = folder / f"{source}.json"
    dst = folder / f"{target}.json"
    if not src.is_file():
        raise UserError(f"{src} not found: run nnUNetv2_plan_and_preprocess -d {dataset} first (or pass -s)")
    if dst.exists() and not overwrite:
        raise UserError(f"{dst} exists: pass --overwrite to replace it")
    source_plans = json.loads(src.read_text())
    if gpu_memory_target is None:
        try:
            plans = derive_plans(source_plans, arch, plans_name=target)
        except ValueError as e:
            raise UserError(f"{src}: {e}") from None
    else:
        plans = _plan_for_budget(dataset, name, folder, arch, source_plans, gpu_memory_target, target)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_text(json.dumps(plans, indent=4))
    tmp.replace(dst)
    return dst


def _plan_for_budget(dataset: str, name: str, folder: Path, arch: str, source_plans: dict, gb: float,
                     target: str) -> dict:
    from nnunetv2.paths import nnUNet_raw

    from .budget_planner import BudgetPlanner, BudgetTooSmall, budget_summary, plan_for_budget

    # nnU-Net's planner reads the fingerprint and the raw dataset.json (channels, labels, number of cases)
    if not (folder / "dataset_fingerprint.json").is_file():
        raise UserError(f"{folder / 'dataset_fingerprint.json'} not found: --gpu-memory-target runs nnU-Net's "
                        f"planner, which needs the dataset fingerprint. Run nnUNetv2_extract_fingerprint -d {dataset} "
                        "(nnUNetv2_plan_and_preprocess writes it too)")
    raw = Path(str(nnUNet_raw)) / name if nnUNet_raw else None
    if raw is None or not (raw / "dataset.json").is_file():
        raise UserError(f"{'$nnUNet_raw' if raw is None else raw / 'dataset.json'} not found: --gpu-memory-target "
                        "runs nnU-Net's planner, which reads the raw dataset's dataset.json; export nnUNet_raw")
    planner = BudgetPlanner(name, arch, gb, target)
    try:
        plans = plan_for_budget(planner, source_plans)
    except BudgetTooSmall as e:
        raise UserError(f"--gpu-memory-target {gb:g} is too small for {DISPLAY_NAMES[arch]} on {name}: {e}") from None
    print(f"{DISPLAY_NAMES[arch]} planned for {gb:g} GB (nnU-Net's rules; estimate: our network's saved activations "
          "relative to nnU-Net's default U-Net):", *budget_summary(plans), sep="\n")
    return plans


def _derive(args) -> int:
    path = derive_plans_file(args.d, args.arch, args.s, args.t, args.overwrite, args.gpu_memory_target)
    print(f"wrote {path}\nTrain the stock trainer with it, e.g.:\n"
          f"  nnUNetv2_train {args.d} 2d 0 -p {path.stem}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "derive-plans",
        help="write a plans file in which nnU-Net's network is LM-Net or LGMSNet (for the stock trainer, -p)",
        description="Derive a plans file from a preprocessed dataset's plans: every configuration's network becomes "
                    "the preset (widths/depth) with the plan's strides and kernels; data_identifier is kept, so the "
                    "preprocessed data is reused. Patch and batch size stay nnU-Net's unless --gpu-memory-target is "
                    "given.",
    )
    p.add_argument("-d", required=True, type=dataset_id_or_name, help="dataset id or name")
    p.add_argument("--arch", choices=sorted(PRESETS), required=True,
                   help=", ".join(f"{k}: {v}" for k, v in DISPLAY_NAMES.items()))
    p.add_argument("-s", default="nnUNetPlans", help="source plans name (default nnUNetPlans)")
    p.add_argument("-t", default=None, help="target plans name (default <source>_LMNet / <source>_LGMSNet, with "
                                             "--gpu-memory-target 24: <source>_LMNet_24G)")
    p.add_argument("--gpu-memory-target", type=float, default=None, metavar="GB",
                   help="plan patch and batch size again for this network and a GPU of GB gigabytes, with nnU-Net's "
                        "planner rules (as nnUNetv2_plan_experiment -gpu_memory_target does for its U-Nets): the "
                        "memory estimate is our network's activation memory relative to nnU-Net's default U-Net, "
                        "measured on small patches on the CPU. Spacing and preprocessed data are kept. Needs the "
                        "dataset fingerprint and the raw dataset.json")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_derive)
