"""Parameter count (from a checkpoint) and MACs/FLOPs (from the rebuilt network) of a trained nnU-Net model.

How FLOPs are counted (also printed next to every number this module produces, see ``FLOPS_NOTE``):

* one forward pass of batch size 1 at the configuration's patch size, deep supervision off, ``eval()`` mode;
* ``torch.utils.flop_counter.FlopCounterMode``: convolutions (incl. transposed, and oneDNN's, which our CPU
  inference calls directly), ``mm``/``bmm``/``addmm``/``baddbmm``
  and scaled-dot-product attention, counted as its two matrix products (QK^T and AV). Manual attention
  (``q @ k.transpose``) is counted through the same matrix products. On CPU, PyTorch's fused SDPA kernel is not in
  the counter's table, so it is registered here; ``nn.MultiheadAttention``'s fused fast path is switched off while
  counting so that its projections and attention are counted too;
* not counted: element-wise operations, normalisation, activations, softmax, pooling, interpolation, bias adds.
  Matrix products that a network computes with element-wise multiplies and sums (e.g. a pure-PyTorch neighbourhood
  attention over shifted feature maps) are invisible to the counter: a module that runs such code declares its
  MACs with a method ``extra_macs(self, inputs: tuple, output) -> int``, which is called through a forward hook
  and added to the count (``EXTRA_MACS_METHOD``);
* FLOPs = 2 x MACs (one multiply-accumulate = two floating point operations).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ..errors import UserError
from ..nnunet_paths import EXT_TRAINER_HINT

BN_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
EXTRA_MACS_METHOD = "extra_macs"
FLOPS_NOTE = (
    "MACs/FLOPs: one forward pass, batch 1, at the plans' patch size, counted with torch.utils.flop_counter "
    "(convolutions and matrix products; attention counted as its QK^T and AV products, also where a module "
    "declares them through extra_macs(); element-wise ops, norms, softmax and bias adds not counted); "
    "FLOPs = 2 x MACs."
)


def load_checkpoint(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}. Train the fold to the end (checkpoint_final.pth) first.")
    try:
        # nnU-Net checkpoints hold plain Python objects next to the tensors, hence weights_only=False
        # (the same call nnU-Net makes). Only load checkpoints you trust.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # corrupt or truncated file
        raise UserError(f"cannot read checkpoint {path}: {e}. Re-run or re-copy the training.") from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise UserError(f"{path} is not an nnU-Net checkpoint (no 'network_weights').")
    return ckpt


def count_parameters_in_state_dict(state_dict: dict) -> int:
    """Number of values in the state dict, BatchNorm running statistics and counters excluded.

    A tensor stored under several keys is counted once: dynamic_network_architectures' U-Net decoders keep a
    reference to their encoder, so the encoder's weights appear twice in ``state_dict()`` (``encoder.*`` and
    ``decoder.encoder.*``) while sharing one storage, which ``torch.save``/``torch.load`` preserve.
    """
    total = 0
    seen = set()
    for key, value in state_dict.items():
        if key.endswith(BN_BUFFER_SUFFIXES):
            continue
        numel = getattr(value, "numel", None)
        if not callable(numel):
            continue
        try:
            ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                     tuple(value.stride()))
        except (AttributeError, RuntimeError):
            ident = ("key", key)
        if ident[0] != 0 and ident in seen:
            continue
        seen.add(ident)
        total += int(numel())
    return total


def count_parameters(checkpoint_path: Path) -> int:
    return count_parameters_in_state_dict(load_checkpoint(checkpoint_path)["network_weights"])


def first_checkpoint(model_dir: Path, folds, name: str = "checkpoint_final.pth") -> tuple[int, Path] | None:
    for k in folds:
        p = model_dir / f"fold_{k}" / name
        if p.is_file():
            return k, p
    return None


def build_network(model_dir: Path, fold: int, checkpoint_name: str = "checkpoint_final.pth"):
    """Rebuild the trained network with nnU-Net's predictor; returns (network, input_shape with batch 1)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    for f in ("plans.json", "dataset.json"):
        if not (model_dir / f).is_file():
            raise UserError(f"{model_dir / f} is missing; it is written by nnU-Net when training starts. "
                            f"Copy it back next to the fold_X folders.")
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints a CUDA-only notice for CPU predictors
        predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False, verbose=False,
                                    allow_tqdm=False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's trainer search reports every folder it scans
            predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=(fold,),
                                                           checkpoint_name=checkpoint_name)
    except RuntimeError as e:
        if "Could not find requested nnunet trainer" in str(e):
            raise UserError(
                f"cannot build the network of {model_dir}: its trainer class was not found by nnU-Net ({e}). "
                f"If it is an nnunet-lmnet trainer, run `{EXT_TRAINER_HINT}` and try again."
            ) from None
        raise
    network = predictor.network
    cm = predictor.configuration_manager
    n_in = determine_num_input_channels(predictor.plans_manager, cm, predictor.dataset_json)
    return network, (1, int(n_in), *[int(s) for s in cm.patch_size])


def count_macs(network, input_shape) -> int:
    """Multiply-accumulates of one forward pass of ``network`` on a zero tensor of ``input_shape``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_flop_count

    def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def _onednn_conv(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)

    custom = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        custom[cpu_sdpa] = _cpu_sdpa
    # our networks' CPU inference convolutions call oneDNN directly (architectures/dense_conv.py)
    custom[torch.ops.aten.mkldnn_convolution] = _onednn_conv

    extra = 0

    def _extra_hook(module, inputs, output):
        nonlocal extra
        extra += int(getattr(module, EXTRA_MACS_METHOD)(inputs, output))

    handles = [m.register_forward_hook(_extra_hook) for m in network.modules()
               if callable(getattr(m, EXTRA_MACS_METHOD, None))]
    mha = getattr(torch.backends, "mha", None)
    fastpath_before = mha.get_fastpath_enabled() if mha is not None else None
    was_training = network.training
    network.eval()
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        x = torch.zeros(input_shape, dtype=torch.float32)
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
            network(x)
        flops = int(counter.get_total_flops())
    finally:
        for h in handles:
            h.remove()
        if mha is not None:
            mha.set_fastpath_enabled(fastpath_before)
        network.train(was_training)
    return flops // 2 + extra


def model_macs(model_dir: Path, fold: int) -> tuple[int, tuple[int, ...]]:
    """(MACs, input shape) of the network trained in ``model_dir/fold_<fold>``."""
    network, shape = build_network(model_dir, fold)
    return count_macs(network, shape), shape
