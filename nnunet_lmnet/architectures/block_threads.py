"""Independent blocks of small CPU kernels on worker threads that run one intra-op thread each.

The neighbourhood attention is a few hundred element-wise kernels per block of (batch items, heads), and blocks are
independent. With more than one intra-op thread PyTorch splits every one of those kernels, and each split starts a
parallel region: a wake-up of each sleeping OpenMP thread under OMP_WAIT_POLICY=PASSIVE (the setting for a shared
machine), which cost more than the second core gave (LM-Net's attention was slower with 2 threads than with 1).
Giving whole blocks to threads instead keeps each kernel on one core, in that core's cache, and needs no region at
all. PyTorch releases the GIL inside its kernels, so the threads run in parallel.

The workers' intra-op thread count is their own: PyTorch sets a thread's count from the process-wide one on first
use, so a worker initialises it, sets 1, and the caller's count is restored afterwards (``torch.set_num_threads``
also sets the process-wide value). The caller's grad and inference modes are thread-local and are carried over.
The pool has one worker per intra-op thread of the caller; it is built lazily, rebuilt when that count changes, and
not inherited across ``fork`` (its threads do not exist in the child).
"""
from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_STARTUP_TIMEOUT_S = 60.0
_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, executor)


def _reset_after_fork() -> None:
    global _lock, _pool
    _lock, _pool = threading.Lock(), None


os.register_at_fork(after_in_child=_reset_after_fork)


def _single_threaded(started: threading.Barrier) -> None:
    torch.get_num_threads()  # initialise this thread's count first: otherwise its first kernel resets it
    torch.set_num_threads(1)
    started.wait(_STARTUP_TIMEOUT_S)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is not None and _pool[:2] == (os.getpid(), workers):
            return _pool[2]
        restore = torch.get_num_threads()
        started = threading.Barrier(workers + 1)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="nnunet-lmnet-blocks", initializer=_single_threaded,
                                  initargs=(started,))
        try:
            for _ in range(workers):  # each task starts one more worker: they all wait in the barrier
                pool.submit(int)
            started.wait(_STARTUP_TIMEOUT_S)
        finally:
            torch.set_num_threads(restore)
        old, _pool = _pool, (os.getpid(), workers, pool)
    if old is not None:
        old[2].shutdown(wait=False)
    return pool


def block_workers(device: torch.device, n_blocks: int) -> int:
    """How many worker threads to spread `n_blocks` over: 1 (run them in the calling thread) unless on CPU with
    more than one intra-op thread, outside torch.compile, export and CPU autocast, and with more than one block."""
    if device.type != "cpu" or n_blocks < 2:
        return 1
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.is_autocast_enabled("cpu"):
        return 1
    return min(torch.get_num_threads(), n_blocks)


def run_blocks(work: Callable[[Iterator[T]], list[R]], blocks: Sequence[T], workers: int) -> list[R]:
    """The results of all `blocks`, in their order; `work(blocks)` returns one result per block it takes from the
    iterator it is given, in that order.

    With `workers` > 1, `work` runs once on each of that many worker threads, all taking blocks from one shared
    sequence as they finish the previous one (per-call state, such as scratch buffers, is per thread); otherwise
    once here."""
    if workers <= 1:
        return work(iter(blocks))
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    counter = itertools.count()  # next() on it is atomic (one C call under the GIL)

    def task() -> tuple[list[int], list[R]]:
        taken: list[int] = []

        def take() -> Iterator[T]:
            while (i := next(counter)) < len(blocks):
                taken.append(i)
                yield blocks[i]

        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return taken, work(take())

    pool = _executor(max(workers, torch.get_num_threads()))  # sized by the threads: rebuilt only when they change
    futures = [pool.submit(task) for _ in range(workers)]
    results: list = [None] * len(blocks)
    for future in futures:
        taken, done = future.result()
        for i, r in zip(taken, done, strict=True):
            results[i] = r
    return results
