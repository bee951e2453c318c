"""ONNX Runtime in place of the PyTorch network inside nnU-Net's own predictor.

nnUNetPredictor keeps everything else: preprocessing, the Gaussian-weighted sliding window, mirroring (it calls
the network on flipped patches), resampling back, export and the ensemble over folds. For the folds it loops over
``list_of_parameters`` and calls ``network.load_state_dict(params)`` before predicting with each; the stand-in
takes those "parameters" as the index of the fold's ONNX Runtime session. The predictor also calls ``.to(device)``
and ``.eval()`` on it, which an ``nn.Module`` without parameters answers as a no-op.
"""
from __future__ import annotations

import torch
import torch.nn as nn

FOLD_KEY = "nnunet_lmnet.onnxruntime_fold"


class OnnxRuntimeNetwork(nn.Module):
    """Calls the ONNX Runtime session of the active fold: numpy float32 in and out, the result as a tensor on the
    input's device and in its dtype."""

    def __init__(self, sessions):
        super().__init__()
        self.sessions = list(sessions)
        self.input_names = [s.get_inputs()[0].name for s in self.sessions]
        self.active = 0

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nnU-Net loads each fold's weights before predicting with that fold: switch to its session."""
        index = state_dict.get(FOLD_KEY) if isinstance(state_dict, dict) else None
        if index is None or not 0 <= int(index) < len(self.sessions):
            raise RuntimeError("OnnxRuntimeNetwork.load_state_dict expects the fold markers that use_onnxruntime "
                               "put into predictor.list_of_parameters, not PyTorch weights")
        self.active = int(index)
        return nn.modules.module._IncompatibleKeys([], [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = self.sessions[self.active].run(None, {self.input_names[self.active]: array})
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def ort_threads() -> int:
    """The threads nnU-Net's predictor gives torch while it predicts (``predict_logits_from_preprocessed_data``)."""
    from nnunetv2.configuration import default_num_processes

    return max(1, min(default_num_processes, torch.get_num_threads()))


def ort_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def use_onnxruntime(predictor, models: list[bytes], threads: int | None = None) -> OnnxRuntimeNetwork:
    """Replace `predictor`'s network and per-fold weights by ONNX Runtime sessions, one per fold, in fold order."""
    from ..export.onnx_export import ort_session

    if len(models) != len(predictor.list_of_parameters):
        raise ValueError(f"{len(models)} ONNX models for {len(predictor.list_of_parameters)} folds")
    threads = ort_threads() if threads is None else threads
    providers = ort_providers(predictor.device)
    network = OnnxRuntimeNetwork([ort_session(m, threads, providers) for m in models])
    predictor.network = network
    predictor.list_of_parameters = [{FOLD_KEY: i} for i in range(len(models))]
    return network
