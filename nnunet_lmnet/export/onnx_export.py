"""`nnunet-lmnet export-onnx`: a trained fold's network, as nnU-Net's predictor builds it, to ONNX.

The route is ``torch.export`` (the dynamo exporter) -> ``torch.onnx`` -> constant folding, then a parity check in
ONNX Runtime against the PyTorch network at the planned patch. The legacy TorchScript exporter fails on LM-Net.

Deployment form: deep supervision off (the predictor builds it so), LM-Net's multi-branch blocks fused once with
``reparameterize()`` (what the eval-mode network computes on the fly, as one depthwise conv each), and a zero
bias given to every bias-free 3D convolution (onnxscript 0.7's translation of a bias-free ``conv3d`` builds a
wrongly shaped bias that ONNX Runtime rejects; adding 0 changes nothing). The predictor's network itself is never
modified: all of this happens on a copy.

Shapes: the batch axis is always dynamic. With ``spatial="dynamic"`` the spatial axes are too, as multiples of the
network's total stride (``torch.export.Dim``) times its ``export_size_factor`` (LGMSNet: 2, as its sparse
transformer's patch follows the parity of the map); an axis whose planned patch is not such a multiple stays
fixed, as does an axis whose patch is that multiple once (torch.export would specialise it). The smallest size the traced network allows is recorded, and the parity check also runs one size up on
every dynamic axis. Exporting dynamic spatial axes takes 2-4x longer; nnU-Net's sliding window only feeds the
planned patch, so ``spatial="fixed"`` is what ``predict --backend onnxruntime`` exports for itself.

The optimiser that ``torch.onnx.export`` runs by default (onnxscript's pattern rewriter) took most of the export
time (~100 s for a small 2D LM-Net on 2 cores) and ONNX Runtime applies its own graph optimisations when it loads
the model; here only constant folding and dead-node removal run, then (``target="onnxruntime"``, the default)
onnxscript's rewriter to ONNX Runtime's fused operators (``onnx_fusions``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..inference.deploy_extra import require_deploy
from .onnx_fusions import DEFAULT_TARGET, TARGETS, fuse_for_onnxruntime
from .onnx_metadata import INPUT_NAME, OUTPUT_NAME

DEFAULT_TOLERANCE = 1e-4
SPATIAL_MODES = ("dynamic", "fixed")


@dataclass
class OnnxExport:
    model: object  # onnx.ModelProto
    spatial_multiple: list[int | None]  # per axis: sizes are multiples of this; None = fixed at the patch
    min_spatial_size: list[int]
    parity: dict
    seconds: float
    target: str
    fusions: dict  # ONNX Runtime fusions applied (target onnxruntime), by name; empty for "standard"

    @property
    def spatial_shape(self) -> str:
        dynamic = [m is not None for m in self.spatial_multiple]
        return "dynamic" if all(dynamic) else "partly dynamic" if any(dynamic) else "fixed"


def deployment_copy(network):
    """A CPU float32 eval copy in deployment form (see the module docstring); `network` is left as it is."""
    import torch
    import torch.nn as nn

    net = copy.deepcopy(network).to("cpu", torch.float32).eval()
    if hasattr(net, "reparameterize"):
        net.reparameterize()
    for m in net.modules():
        if isinstance(m, nn.Conv3d) and m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.out_channels))
    return net


def spatial_multiples(network, patch: list[int], stride: list[int], spatial: str) -> list[int | None]:
    """Per axis, the size multiple of a dynamic export, or None where the axis stays at the patch."""
    if spatial == "fixed":
        return [None] * len(patch)
    factor = int(getattr(network, "export_size_factor", 1))
    # torch.export fixes an axis whose example size is 1 x the multiple (its 0/1 specialisation): such an axis
    # stays at the patch
    return [s * factor if p % (s * factor) == 0 and p // (s * factor) >= 2 else None for p, s in zip(patch, stride)]


def _dynamic_shapes(multiples: list[int | None]):
    from torch.export import Dim

    axes = {0: Dim("batch", min=1)}
    for i, m in enumerate(multiples):
        if m is not None:
            axes[2 + i] = int(m) * Dim(f"n{i}", min=1)
    return (axes,)


def _min_spatial_size(exported, patch: list[int]) -> list[int]:
    """Per spatial axis, the smallest size the traced program allows (the patch itself where the axis is fixed)."""
    name = exported.graph_signature.user_inputs[0]
    val = next(n for n in exported.graph.nodes if n.op == "placeholder" and n.name == name).meta["val"]
    ranges = exported.range_constraints
    out = []
    for d, size in enumerate(val.shape[2:]):
        if isinstance(size, int):
            out.append(int(patch[d]))
            continue
        expr = size.node.expr
        lower = expr.subs({sym: ranges[sym].lower for sym in expr.free_symbols if sym in ranges})
        if expr in ranges:
            lower = max(lower, ranges[expr].lower)
        out.append(int(lower))
    return out


def _to_onnx(net, example, multiples: list[int | None], target: str):
    import onnxscript.optimizer
    import torch

    try:
        with torch.no_grad():
            exported = torch.export.export(net, (example,), dynamic_shapes=_dynamic_shapes(multiples), strict=False)
    except Exception as e:
        hint = " Try --spatial fixed (the planned patch only)." if any(m is not None for m in multiples) else ""
        raise UserError(f"torch.export could not trace {type(net).__name__}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}.{hint}") from None
    minimum = _min_spatial_size(exported, list(example.shape[2:]))
    program = torch.onnx.export(exported, (example,), dynamo=True, optimize=False, verbose=False,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    onnxscript.optimizer.fold_constants(program.model)
    onnxscript.optimizer.remove_unused_nodes(program.model)
    fusions = fuse_for_onnxruntime(program.model) if target == "onnxruntime" else {}
    return program.model_proto, minimum, fusions


def ort_session(model_bytes: bytes, threads: int | None = None, providers=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=providers or ["CPUExecutionProvider"])


def parity(session, network, shape, seed: int = 0) -> dict:
    """ONNX Runtime against PyTorch (`network` as the predictor runs it) on a seeded standard-normal input."""
    import numpy as np
    import torch

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = network.to("cpu").eval()(x).numpy()
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if out.shape != ref.shape:
        return {"shape": list(shape), "max_abs": float("inf"), "max_rel": float("inf"),
                "note": f"output shape {list(out.shape)} != PyTorch {list(ref.shape)}"}
    max_abs = float(np.abs(out.astype(np.float64) - ref).max())
    return {"shape": list(shape), "max_abs": max_abs, "max_rel": max_abs / max(float(np.abs(ref).max()), 1e-12)}


def _parity_shapes(patch: list[int], channels: int, multiples: list[int | None]) -> list[tuple]:
    shapes = [(1, channels, *patch), (2, channels, *patch)]  # the predictor's call, and the dynamic batch
    if any(m is not None for m in multiples):  # one size up on every dynamic axis
        shapes.append((1, channels, *[p + (m or 0) for p, m in zip(patch, multiples)]))
    return shapes


def export_network(network, patch_size, num_input_channels: int, stride: list[int], spatial: str = "dynamic",
                   tolerance: float = DEFAULT_TOLERANCE, log=print, target: str = DEFAULT_TARGET) -> OnnxExport:
    """Export `network` (the predictor's, eval) and check it in ONNX Runtime; UserError above `tolerance`."""
    import torch

    require_deploy("ONNX export")
    if spatial not in SPATIAL_MODES:
        raise ValueError(f"spatial must be one of {SPATIAL_MODES}, got {spatial!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    patch = [int(p) for p in patch_size]
    bad = [f"{p} (stride {s})" for p, s in zip(patch, stride) if p % s]
    if bad:
        raise UserError(f"the patch size {patch} is not a multiple of the network's total stride {stride}: "
                        f"{', '.join(bad)}. Fix the plans' patch_size.")
    start = time.perf_counter()
    net = deployment_copy(network)
    # batch 2: torch.export specialises an example size of 1, so a batch-1 example would fix the batch axis
    example = torch.randn(2, num_input_channels, *patch, generator=torch.Generator().manual_seed(1))
    multiples = spatial_multiples(network, patch, stride, spatial)
    log(f"Exporting {type(network).__name__} with torch.export (patch {patch}, spatial axes: "
        + ", ".join("fixed" if m is None else f"multiples of {m}" for m in multiples) + ") ...")
    model, minimum, fusions = _to_onnx(net, example, multiples, target)
    if fusions:
        log("ONNX Runtime fusions: " + ", ".join(f"{name} x{n}" for name, n in fusions.items()))
    session = ort_session(model.SerializeToString())
    checks = [parity(session, network, shape) for shape in _parity_shapes(patch, num_input_channels, multiples)]
    worst = max(checks, key=lambda c: c["max_rel"])
    result = {"tolerance": tolerance, "max_rel": worst["max_rel"], "max_abs": worst["max_abs"], "checks": checks}
    log("ONNX Runtime vs PyTorch: " + "; ".join(
        f"input {c['shape']}: max abs diff {c['max_abs']:.3g}, relative {c['max_rel']:.3g}" for c in checks)
        + f" (limit {tolerance:g} relative)")
    if not worst["max_rel"] <= tolerance:
        raise UserError(
            f"ONNX Runtime's output differs from PyTorch's by {worst['max_rel']:.3g} relative (max abs "
            f"{worst['max_abs']:.3g}) on input {worst['shape']}, more than the limit {tolerance:g}"
            + (f" ({worst['note']})" if "note" in worst else "") + ": the ONNX file was not written.")
    return OnnxExport(model, multiples, minimum, result, time.perf_counter() - start, target, fusions)


# --------------------------------------------------------------------------------------------- from a model folder
def export_fold(predictor, model, fold_index: int, spatial: str = "fixed", tolerance: float = DEFAULT_TOLERANCE,
                log=print, target: str = DEFAULT_TARGET):
    """The ONNX model (ModelProto, metadata attached) of the `fold_index`-th fold loaded into `predictor`."""
    from ..inference.predictor import total_stride
    from .onnx_metadata import attach_metadata, build_metadata

    fold = model.folds[fold_index]
    network = copy.deepcopy(predictor.network)
    network.load_state_dict(predictor.list_of_parameters[fold_index])
    network.eval()
    channels = _input_channels(predictor)
    done = export_network(network, predictor.configuration_manager.patch_size, channels,
                          total_stride(predictor.configuration_manager), spatial, tolerance, log, target)
    info = {"num_input_channels": channels, "spatial_shape": done.spatial_shape,
            "spatial_multiple": done.spatial_multiple, "min_spatial_size": done.min_spatial_size,
            "parity": done.parity, "target": done.target, "onnxruntime_fusions": done.fusions}
    attach_metadata(done.model, build_metadata(predictor, model, fold, type(network).__name__, info))
    log(f"Exported fold {fold} in {done.seconds:.0f} s.")
    return done.model


def _input_channels(predictor) -> int:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    return int(determine_num_input_channels(predictor.plans_manager, predictor.configuration_manager,
                                            predictor.dataset_json))


def export_onnx(model_folder: Path, fold, out: Path, checkpoint: str = "checkpoint_final.pth",
                spatial: str = "dynamic", tolerance: float = DEFAULT_TOLERANCE, overwrite: bool = False,
                log=print, target: str = DEFAULT_TARGET) -> Path:
    """`nnunet-lmnet export-onnx`: check the folder, load the predictor, export, check parity, write `out`."""
    from ..inference.model_folder import check_model_folder
    from ..inference.predictor import load_predictor
    from ..report_output import atomic_path, refuse_existing

    require_deploy("export-onnx")
    out = Path(out)
    if out.suffix != ".onnx":
        raise UserError(f"-o {out}: the output file must end in .onnx")
    refuse_existing([out], overwrite)  # before the export's minutes, not after
    model = check_model_folder(Path(model_folder), [fold], checkpoint)
    predictor = load_predictor(model, allow_compile=False)
    proto = export_fold(predictor, model, 0, spatial, tolerance, log, target)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return out
