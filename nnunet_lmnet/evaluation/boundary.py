"""Boundary metrics of validation predictions: HD95 and normalised surface Dice (NSD), computed with MONAI.

Definitions (documented in the comparison report as well):

* HD95 [mm]: ``monai.metrics.compute_hausdorff_distance(percentile=95)`` - symmetric: the larger of the two directed
  95th percentiles of the distances between boundary voxels of prediction and reference, in physical units.
* NSD at tolerance tau [mm]: ``monai.metrics.compute_surface_dice(use_subvoxels=True)`` - the fraction of both
  surfaces that lies within tau of the other surface, with the surface-element areas of DeepMind's surface-distance
  definition (the one used by KiTS23).
* Spacing is the spacing nnU-Net's reader reports for the *reference* file, in the array's axis order. 2D data
  (a single slice, e.g. PNGs with nnU-Net's placeholder spacing 999) is evaluated in 2D with the in-plane spacing,
  so for natural images the unit is pixels.
* Empty classes: both prediction and reference empty -> HD95 and NSD are NaN and excluded from every mean
  (``status = both_empty``). Only one of them empty -> NSD = 0 and HD95 is undefined: reported as NaN, excluded from
  the HD95 means and counted in the report (``status = pred_empty`` / ``ref_empty``).
* Voxels carrying the dataset's ignore label in the reference are removed from both masks first.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

from ..errors import UserError

DEFAULT_NSD_TOLERANCE_MM = 2.0
MONAI_REQUIREMENT = "monai>=1.3"


def _monai_metrics():
    try:
        from monai.metrics import compute_hausdorff_distance, compute_surface_dice
    except ImportError:
        raise UserError(
            f"boundary metrics (--boundary) need MONAI, which is not installed. Install it with "
            f"`pip install '{MONAI_REQUIREMENT}'` and run again."
        ) from None
    return compute_hausdorff_distance, compute_surface_dice


def to_evaluation_geometry(seg, spacing):
    """nnU-Net reader output (c, z, y, x) or (c, y, x) + spacing -> (array, spacing) in 2D or 3D.

    A single slice along the first spatial axis is evaluated as a 2D image with the in-plane spacing.
    """
    import numpy as np

    arr = np.asarray(seg)
    if arr.ndim == len(spacing) + 1:  # leading channel axis
        arr = arr[0]
    spacing = tuple(float(s) for s in spacing)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr, spacing = arr[0], spacing[1:]
    if arr.ndim not in (2, 3) or len(spacing) != arr.ndim:
        raise ValueError(f"unsupported segmentation shape {arr.shape} with spacing {spacing}")
    return arr, spacing


def mask_boundary_metrics(pred_mask, ref_mask, spacing, tolerance_mm: float) -> tuple[float, float, str]:
    """(HD95, NSD, status) of two boolean masks of one class. See the module docstring for empty masks."""
    import numpy as np
    import torch

    pred_any, ref_any = bool(np.any(pred_mask)), bool(np.any(ref_mask))
    if not pred_any and not ref_any:
        return math.nan, math.nan, "both_empty"
    if not pred_any or not ref_any:
        return math.nan, 0.0, "pred_empty" if not pred_any else "ref_empty"
    hd_fn, nsd_fn = _monai_metrics()
    p = torch.from_numpy(np.ascontiguousarray(pred_mask, dtype=np.float32))[None, None]
    r = torch.from_numpy(np.ascontiguousarray(ref_mask, dtype=np.float32))[None, None]
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI >= 1.5 passes a deprecated argument to its own get_mask_edges; nothing a user can act on
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = float(hd_fn(p, r, include_background=True, percentile=95, spacing=spacing)[0, 0])
        nsd = float(nsd_fn(p, r, [float(tolerance_mm)], include_background=True, spacing=spacing,
                           use_subvoxels=True)[0, 0])
    return hd95, nsd, "ok"


def case_boundary_metrics(pred_file: str, ref_file: str, reader_class, class_keys: list[str], tolerance_mm: float,
                          ignore_label: int | None = None) -> list[dict]:
    """One row per class key (nnU-Net metric key, e.g. '1' or '(1, 2)') for one case."""
    from nnunetv2.evaluation.evaluate_predictions import key_to_label_or_region, region_or_label_to_mask

    rw = reader_class()
    try:
        pred, _ = rw.read_seg(pred_file)
        ref, ref_props = rw.read_seg(ref_file)
    except Exception as e:
        raise UserError(f"cannot read {pred_file} or {ref_file} with {reader_class.__name__}: {e}") from None
    if pred.shape != ref.shape:
        raise UserError(f"prediction {pred_file} has shape {tuple(pred.shape)} but reference {ref_file} has "
                        f"{tuple(ref.shape)}; was the prediction made for this dataset?")
    pred, spacing = to_evaluation_geometry(pred, ref_props["spacing"])
    ref, _ = to_evaluation_geometry(ref, ref_props["spacing"])
    keep = (ref != ignore_label) if ignore_label is not None else None
    rows = []
    for key in class_keys:
        lr = key_to_label_or_region(key)
        pm = region_or_label_to_mask(pred, lr)
        rm = region_or_label_to_mask(ref, lr)
        if keep is not None:
            pm, rm = pm & keep, rm & keep
        hd95, nsd, status = mask_boundary_metrics(pm, rm, spacing, tolerance_mm)
        rows.append({"class": key, "HD95": hd95, "NSD": nsd, "boundary_status": status})
    return rows


def _case_job(args):
    trainer, fold, case, pred_file, ref_file, reader_class, class_keys, tol, ignore_label = args
    rows = case_boundary_metrics(pred_file, ref_file, reader_class, class_keys, tol, ignore_label)
    for r in rows:
        r.update({"trainer": trainer, "fold": fold, "case": case})
    return rows


def reader_for_model(model_dir: Path, dataset_json: dict, example_file: str):
    """The reader/writer nnU-Net uses for this model: plans.json's ``image_reader_writer``, else dataset.json's."""
    from nnunetv2.imageio.reader_writer_registry import (determine_reader_writer_from_dataset_json,
                                                         recursive_find_reader_writer_by_name)

    plans_file = model_dir / "plans.json"
    if plans_file.is_file():
        from ..nnunet_paths import load_json_file

        name = load_json_file(plans_file, "plans file").get("image_reader_writer")
        if name:
            try:
                return recursive_find_reader_writer_by_name(name)
            except RuntimeError:
                pass
    return determine_reader_writer_from_dataset_json(dataset_json, example_file, allow_nonmatching_filename=True,
                                                     verbose=False)


def ignore_label_of(dataset_json: dict) -> int | None:
    value = (dataset_json.get("labels") or {}).get("ignore")
    return int(value) if isinstance(value, (int, float)) else None


def run_jobs(jobs: list[tuple], num_processes: int) -> list[dict]:
    rows: list[dict] = []
    if num_processes <= 1 or len(jobs) <= 1:
        for j in jobs:
            rows.extend(_case_job(j))
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=num_processes, mp_context=multiprocessing.get_context("spawn")) as ex:
        for r in ex.map(_case_job, jobs, chunksize=max(1, len(jobs) // (4 * num_processes))):
            rows.extend(r)
    return rows
