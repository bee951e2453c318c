"""nnU-Net's predictor for a checked model folder, initialised exactly as nnUNetv2_predict does it.

``initialize_from_trained_model_folder`` builds the network through the trainer class's
``build_network_architecture`` (deep supervision off; our trainers' networks run LM-Net's fused branches in eval
mode) and loads the first fold's weights. Export and the ONNX Runtime backend start from that same object, so they
see the network nnUNetv2_predict would run.
"""
from __future__ import annotations

import contextlib
import os

from ..errors import UserError
from ..nnunet_paths import EXT_TRAINER_HINT
from .model_folder import ModelFolder


@contextlib.contextmanager
def _compile_off():
    """nnU-Net wraps the network in torch.compile when nnUNet_compile is true; an export or a stand-in network
    must get the plain module."""
    old = os.environ.get("nnUNet_compile")
    os.environ["nnUNet_compile"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("nnUNet_compile", None)
        else:
            os.environ["nnUNet_compile"] = old


def make_predictor(device: str = "cpu", step_size: float = 0.5, use_mirroring: bool = True,
                   verbose: bool = False, allow_tqdm: bool = False):
    """An nnUNetPredictor with nnUNetv2_predict's settings (Gaussian weighting, mirroring unless disabled)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if not 0 < step_size <= 1:
        raise UserError(f"--step_size must be in (0, 1], got {step_size} (nnU-Net recommends 0.5).")
    return nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=use_mirroring,
                           perform_everything_on_device=True, device=torch.device(device), verbose=verbose,
                           verbose_preprocessing=verbose, allow_tqdm=allow_tqdm)


def load_predictor(model: ModelFolder, predictor=None, allow_compile: bool = True):
    """`predictor` (default: ``make_predictor()``) initialised from the model folder's folds and checkpoint."""
    predictor = make_predictor() if predictor is None else predictor
    context = contextlib.nullcontext() if allow_compile else _compile_off()
    folds = [f if f == "all" else int(f) for f in model.folds]
    try:
        with context:
            predictor.initialize_from_trained_model_folder(str(model.path), folds, checkpoint_name=model.checkpoint)
    except RuntimeError as e:
        if "Could not find requested nnunet trainer" in str(e):
            raise UserError(f"nnU-Net cannot find the trainer class of {model.path}. If it is one of ours, run: "
                            f"{EXT_TRAINER_HINT}") from None
        raise
    return predictor


def total_stride(configuration_manager) -> list[int]:
    """Per axis, the product of the network's strides: every input size must be a multiple of it."""
    import numpy as np

    strides = np.array(configuration_manager.pool_op_kernel_sizes, dtype=np.int64)
    return [int(v) for v in strides.prod(axis=0)]
