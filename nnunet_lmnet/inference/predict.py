"""`nnunet-lmnet predict`: nnUNetv2_predict's pipeline with PyTorch or ONNX Runtime running the network.

Both backends use nnUNetPredictor as nnUNetv2_predict sets it up (same defaults, same files written: the
segmentations, ``dataset.json``, ``plans.json``, ``predict_from_raw_data_args.json``); with ``onnxruntime`` only
``predictor.network`` is swapped for ONNX Runtime sessions (:mod:`.onnx_backend`). Like nnUNetv2_predict, each
case's file is written when it is done (``--continue_prediction`` skips cases already there).
"""
from __future__ import annotations

import contextlib
import multiprocessing
from pathlib import Path

from ..errors import UserError
from .deploy_extra import require_deploy
from .model_folder import ModelFolder, check_input_folder, model_jsons

BACKENDS = ("torch", "onnxruntime")


@contextlib.contextmanager
def torch_threads(device: str, threads: int | None):
    """nnUNetv2_predict's thread setting (CPU: all cores; CUDA: one), or `threads`; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads is None:
        threads = multiprocessing.cpu_count() if device == "cpu" else 1
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def onnx_models_for(predictor, model: ModelFolder, onnx_files=None, log=print) -> list[bytes]:
    """One serialized ONNX model per fold of `model`: the given files (checked against the folds) or exported now
    at the planned patch."""
    from ..export.onnx_export import export_fold
    from ..export.onnx_metadata import check_matches_fold, read_metadata

    if not onnx_files:
        log(f"Exporting {len(model.folds)} fold(s) to ONNX (pass files from `nnunet-lmnet export-onnx` with --onnx "
            f"to skip this) ...")
        return [export_fold(predictor, model, i, "fixed", log=log).SerializeToString()
                for i in range(len(model.folds))]
    if len(onnx_files) != len(model.folds):
        raise UserError(f"--onnx takes one file per fold of -f ({len(model.folds)}), got {len(onnx_files)}.")
    patch = [int(p) for p in predictor.configuration_manager.patch_size]
    models = []
    for path, fold in zip(map(Path, onnx_files), model.folds):
        meta = read_metadata(path)
        check_matches_fold(path, meta, model, fold)
        multiples = meta.get("spatial_multiple") or [None] * len(patch)
        exported = meta.get("patch_size") or []
        fits = len(exported) == len(patch) == len(multiples) and all(
            p == e if m is None else p % m == 0 for p, e, m in zip(patch, exported, multiples))
        if not fits:
            raise UserError(f"{path} does not take the plans' patch {patch} (exported for {exported}, size "
                            f"multiples {multiples}; None = fixed): export it again.")
        models.append(path.read_bytes())
    return models


def run_prediction(input_folder: Path, output_folder: Path, model: ModelFolder, backend: str = "torch",
                   device: str = "cpu", step_size: float = 0.5, use_mirroring: bool = True,
                   num_processes_preprocessing: int = 3, num_processes_export: int = 3,
                   save_probabilities: bool = False, continue_prediction: bool = False, onnx_files=None,
                   prev_stage_predictions: Path | None = None, threads: int | None = None, verbose: bool = False,
                   log=print) -> list[str]:
    """Predict every case of `input_folder` into `output_folder`; returns the case ids."""
    import torch

    from ..report_output import same_or_inside
    from .onnx_backend import use_onnxruntime
    from .predictor import load_predictor, make_predictor

    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if onnx_files and backend != "onnxruntime":
        raise UserError("--onnx needs --backend onnxruntime.")
    if backend == "onnxruntime":
        require_deploy("predict --backend onnxruntime")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("-device cuda: no CUDA device is available to torch here; use -device cpu.")
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    _, dataset_json = model_jsons(model.path)
    cases = check_input_folder(input_folder, dataset_json)
    if same_or_inside(output_folder, input_folder):
        raise UserError(f"-o {output_folder} is (inside) the input folder {input_folder}: choose another output "
                        f"folder, so that the input images stay as they are.")
    with torch_threads(device, threads):
        predictor = make_predictor(device, step_size, use_mirroring, verbose=verbose, allow_tqdm=verbose)
        load_predictor(model, predictor, allow_compile=backend == "torch")
        if backend == "onnxruntime":
            use_onnxruntime(predictor, onnx_models_for(predictor, model, onnx_files, log))
        output_folder.mkdir(parents=True, exist_ok=True)
        prev = None if prev_stage_predictions is None else str(prev_stage_predictions)
        if num_processes_preprocessing == 0 and num_processes_export == 0:
            predictor.predict_from_files_sequential(str(input_folder), str(output_folder), save_probabilities,
                                                    overwrite=not continue_prediction,
                                                    folder_with_segs_from_prev_stage=prev)
        else:
            predictor.predict_from_files(str(input_folder), str(output_folder), save_probabilities,
                                         overwrite=not continue_prediction,
                                         num_processes_preprocessing=num_processes_preprocessing,
                                         num_processes_segmentation_export=num_processes_export,
                                         folder_with_segs_from_prev_stage=prev)
    return cases
