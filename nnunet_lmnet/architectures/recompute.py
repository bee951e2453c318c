"""Exact activation recomputation for the networks' blocks: keep a block's inputs, recompute the rest in backward.

A block run through ``recompute(block_fn, module, *inputs)`` in a training forward saves only its inputs; its
intermediate results are recomputed during backward (``torch.utils.checkpoint``, non-reentrant, so DDP without
``find_unused_parameters`` and ``torch.compile`` work). The function is the same, and so are the gradients:

- BatchNorm running statistics: the recomputation runs the block in training mode again (batch statistics, as the
  forward did) and would update ``running_mean`` / ``running_var`` / ``num_batches_tracked`` a second time. They
  are restored afterwards, so they change exactly once per step, as without recomputation. (Under
  ``torch.compile`` the graph is recomputed by AOT autograd, which does not repeat buffer mutations.)
- Dropout: the RNG state is saved before the block and restored for the recomputation, so masks are the same.
- Nesting: a block called inside another recomputed block runs plainly (it is recomputed as part of the outer one).

Saved-activation accounting: non-reentrant checkpoint keeps its inputs outside autograd's saved tensors, so a
``saved_tensors_hooks`` counter would not see them. ``observe_kept`` lets such a counter be told about them.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

_state = threading.local()
_KEPT_OBSERVERS: list[Callable[[torch.Tensor], None]] = []


@contextlib.contextmanager
def observe_kept(observer: Callable[[torch.Tensor], None]) -> Iterator[None]:
    """Call `observer(t)` for every tensor a recomputed block keeps for its backward while the context is open."""
    _KEPT_OBSERVERS.append(observer)
    try:
        yield
    finally:
        _KEPT_OBSERVERS.remove(observer)


def _running_stat_modules(module: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats and m.running_mean is not None]


@contextlib.contextmanager
def _running_stats_restored(norms: list) -> Iterator[None]:
    snapshot = [(m.running_mean.clone(), m.running_var.clone(),
                 None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:  # also when checkpoint stops the recomputation early (it raises to do so)
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, snapshot):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                if count is not None:
                    m.num_batches_tracked.copy_(count)


def _depth() -> int:
    return getattr(_state, "depth", 0)


@contextlib.contextmanager
def _inside(discarded: bool) -> Iterator[None]:
    _state.depth = _depth() + 1
    outer, _state.discarded = in_discarded_forward(), discarded
    try:
        yield
    finally:
        _state.depth -= 1
        _state.discarded = outer


def in_discarded_forward() -> bool:
    """True inside the first forward of a recomputed block, whose saved tensors autograd drops (they come from
    the recomputation in backward). An autograd Function may then save placeholders of the same shapes instead
    of tensors that cost work to produce only for backward."""
    return getattr(_state, "discarded", False)


def should_recompute(module: nn.Module, enabled: bool) -> bool:
    """True where recomputation changes anything: training, gradients on, not already inside a recomputed block."""
    return enabled and module.training and torch.is_grad_enabled() and _depth() == 0


def recompute(fn: Callable[..., torch.Tensor], module: nn.Module, *inputs: torch.Tensor | None,
              enabled: bool = True) -> torch.Tensor:
    """`fn(*inputs)`, keeping only `inputs` for backward. `module` owns every parameter and buffer `fn` uses.

    Runs `fn` plainly where recomputation would change nothing (see `should_recompute`) or `enabled` is False.
    """
    if not should_recompute(module, enabled):
        return fn(*inputs)
    for observer in _KEPT_OBSERVERS:
        for t in inputs:
            if isinstance(t, torch.Tensor):
                observer(t)
    if torch.compiler.is_compiling():  # traced once; AOT autograd recomputes without re-running Python
        return checkpoint(fn, *inputs, use_reentrant=False)
    norms = _running_stat_modules(module)
    calls = 0

    def body(*args):
        nonlocal calls
        calls += 1
        restore = _running_stats_restored(norms) if calls > 1 else contextlib.nullcontext()
        with restore, _inside(discarded=calls == 1):
            return fn(*args)

    return checkpoint(body, *inputs, use_reentrant=False, preserve_rng_state=True)
