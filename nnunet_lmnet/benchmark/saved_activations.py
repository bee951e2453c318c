"""Bytes autograd keeps for backward after one forward: the activation memory of a training step, device-free.

Counted with ``torch.autograd.graph.saved_tensors_hooks``: every tensor an op saves passes the pack hook; each
underlying storage is counted once (a view, an in-place result or a tensor saved by two ops is one buffer), and the
storages of parameters (and views of them, e.g. a linear layer's transposed weight) are left out: they exist
whether or not anything is trained. Custom autograd Functions that save with ``ctx.save_for_backward`` go through
the same hook. Blocks recomputed in backward (``architectures.recompute``) keep their inputs outside autograd's
saved tensors; they report them through ``observe_kept`` and are counted the same way.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from ..architectures.recompute import observe_kept


def _storage_key(t: torch.Tensor) -> tuple[str, int] | None:
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. some wrapper subclasses)
        return None
    return (str(t.device), storage.data_ptr())


class SavedBytes:
    """Accumulates the unique storages saved while active; ``bytes`` is their total size."""

    def __init__(self, exclude: Iterator[torch.Tensor] = ()):
        self._excluded = {k for k in (_storage_key(p) for p in exclude) if k is not None}
        self._seen: dict[tuple[str, int], int] = {}

    def _pack(self, t: torch.Tensor):
        key = _storage_key(t)
        if key is not None and key not in self._excluded:
            self._seen[key] = max(self._seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    @contextlib.contextmanager
    def recording(self):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t), observe_kept(self._pack):
            yield self

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())


def saved_bytes(net: torch.nn.Module, forward: Callable[[], object]) -> int:
    """Bytes saved for backward by `forward()` (which runs `net`), parameters excluded. The graph is freed."""
    counter = SavedBytes(exclude=list(net.parameters()) + list(net.buffers()))
    with counter.recording():
        out = forward()
    del out
    return counter.bytes


def saved_bytes_per_sample(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Saved bytes of one training-mode forward of `x`, divided by its batch size."""
    return saved_bytes(net, lambda: net(x)) // x.shape[0]
