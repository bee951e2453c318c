"""What an exported ONNX file records about its model (ONNX ``metadata_props``), and the check that a file belongs
to a model folder's fold.

Every value is a JSON string under a ``nnunet_lmnet.`` key, so any ONNX reader gets the plans, dataset.json, patch
size, mirror axes and stride back with one ``json.loads``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import UserError

PREFIX = "nnunet_lmnet."
FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("nnunet-lmnet", "nnunetv2", "torch", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def build_metadata(predictor, model, fold, network_class: str, export_info: dict) -> dict:
    """The metadata of `fold` of `model` (a ModelFolder) as loaded into `predictor`, plus the export's own facts
    (`export_info`: spatial mode, minimum size, parity result)."""
    from ..inference.predictor import total_stride

    cm = predictor.configuration_manager
    axes = predictor.allowed_mirroring_axes
    return {
        "format_version": FORMAT_VERSION,
        "dataset_name": predictor.plans_manager.dataset_name,
        "trainer": model.trainer,
        "plans_name": model.plans,
        "configuration": model.configuration,
        "fold": fold,
        "checkpoint": model.checkpoint,
        "checkpoint_sha256": file_sha256(model.checkpoint_path(fold)),
        "network_class": network_class,
        "patch_size": [int(v) for v in cm.patch_size],
        "total_stride": total_stride(cm),
        "allowed_mirroring_axes": None if axes is None else [int(a) for a in axes],
        "num_input_channels": int(export_info["num_input_channels"]),
        "num_segmentation_heads": int(predictor.label_manager.num_segmentation_heads),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "input_layout": "N, C, " + ", ".join("DHW"[-len(cm.patch_size):]) + " (float32, nnU-Net-preprocessed)",
        "output_meaning": "raw logits, no softmax/sigmoid (regions: one sigmoid head per region)",
        "spatial_shape": export_info["spatial_shape"],
        "spatial_multiple": export_info["spatial_multiple"],
        "min_spatial_size": export_info["min_spatial_size"],
        "parity": export_info["parity"],
        # "onnxruntime": ONNX Runtime's fused (com.microsoft) operators, runs in ONNX Runtime only; "standard"
        "target": export_info["target"],
        "onnxruntime_fusions": export_info["onnxruntime_fusions"],
        "versions": _versions(),
        "plans": predictor.plans_manager.plans,
        "dataset_json": predictor.dataset_json,
    }


def attach_metadata(model_proto, metadata: dict) -> None:
    del model_proto.metadata_props[:]
    for key, value in metadata.items():
        entry = model_proto.metadata_props.add()
        entry.key = PREFIX + key
        entry.value = json.dumps(value, default=str)
    model_proto.producer_name = "nnunet-lmnet export-onnx"
    model_proto.doc_string = (
        f"nnU-Net {metadata['trainer']}__{metadata['plans_name']}__{metadata['configuration']} fold "
        f"{metadata['fold']} ({metadata['dataset_name']}): input {metadata['input_layout']}, output "
        f"{metadata['output_meaning']}. Metadata keys start with '{PREFIX}'.")


def read_metadata(path: Path) -> dict:
    """The ``nnunet_lmnet.*`` metadata of an ONNX file (UserError if it has none)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise UserError(f"ONNX file not found: {path}") from None
    except Exception as e:  # onnx raises DecodeError and others for a file that is not ONNX
        raise UserError(f"{path} is not a readable ONNX file ({type(e).__name__}: {e}).") from None
    meta = {p.key[len(PREFIX):]: json.loads(p.value) for p in model.metadata_props if p.key.startswith(PREFIX)}
    if "format_version" not in meta:
        raise UserError(f"{path} was not written by `nnunet-lmnet export-onnx` (no {PREFIX}* metadata): export "
                        f"the model with it.")
    return meta


def check_matches_fold(path: Path, meta: dict, model, fold) -> None:
    """UserError unless `meta` (of ONNX file `path`) was exported from `fold` of `model` with its checkpoint."""
    expected = {"trainer": model.trainer, "plans_name": model.plans, "configuration": model.configuration,
                "fold": fold}
    for key, value in expected.items():
        if str(meta.get(key)) != str(value):
            raise UserError(f"{path} was exported from {key} {meta.get(key)!r}, not {value!r}. Pass the ONNX files "
                            f"in the order of -f (one per fold), or export this fold with `nnunet-lmnet export-onnx`.")
    sha = file_sha256(model.checkpoint_path(fold))
    if meta.get("checkpoint_sha256") != sha:
        raise UserError(f"{path} was exported from another {model.checkpoint} of fold {fold} than the one in "
                        f"{model.fold_dir(fold)} (checkpoint checksums differ): export it again.")
