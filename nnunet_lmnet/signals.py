"""Signals that end a command: SIGTERM and SIGHUP become SystemExit, so clean-up code runs, in this process only.

SIGTERM is a kill or a batch scheduler's time limit, SIGHUP a closed terminal or ssh session. Python's default
for both is to die at once, leaving temporary folders and child processes behind. Forked children (nnU-Net forks
``multiprocessing.Pool`` workers) get the default handling back; see :func:`_reset_in_child`.

Only the standard library is imported: the CLI imports this at start-up.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_exit(signum, frame):
    raise_for(signum)


_fork_state = threading.local()


def _block_before_fork() -> None:
    # A signal that reached the child before its handler is reset would be dropped (Python discards a pending
    # signal whose handler became SIG_DFL); blocked across fork() it stays pending and kills the child afterwards.
    if any(signal.getsignal(sig) is _raise_exit for sig in _CLEANUP_SIGNALS):
        _fork_state.mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CLEANUP_SIGNALS)


def _unblock_after_fork() -> None:
    mask = getattr(_fork_state, "mask", None)
    if mask is not None:
        _fork_state.mask = None
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _reset_in_child() -> None:
    """Forked children (nnU-Net's verify forks a multiprocessing.Pool) get the default handlers back.

    With the inherited handler a pool worker that receives the pool's shutdown SIGTERM while starting raises
    SystemExit inside multiprocessing's own code instead of dying, and the pool waits for it forever.
    """
    for sig in _CLEANUP_SIGNALS:
        try:
            if signal.getsignal(sig) is _raise_exit:
                signal.signal(sig, signal.SIG_DFL)
        except ValueError:  # forked from a thread that Python does not treat as the child's main thread
            pass
    _unblock_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_block_before_fork,
                        after_in_parent=_unblock_after_fork,
                        after_in_child=_reset_in_child)


@contextmanager
def exit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise SystemExit while the block runs, so its clean-up (``finally``/``except``) runs.

    Installed only in the main thread of the main process: worker processes keep the default handling.
    """
    if threading.current_thread() is not threading.main_thread() or multiprocessing.parent_process() is not None:
        yield
        return
    previous = {sig: signal.signal(sig, _raise_exit) for sig in _CLEANUP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Processes started in the block ignore Ctrl-C for their whole life (Python keeps a SIGINT ignored by its parent).

    Then only this process gets KeyboardInterrupt, and stops them, instead of every worker printing a traceback.
    This process ignores Ctrl-C too while the block runs: keep the block to starting the workers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Record Ctrl-C, SIGTERM and SIGHUP instead of acting on them while the block runs; yields the list they are
    recorded in.

    For a step that must not be cut in two, such as starting a child process: a Ctrl-C inside
    ``subprocess.Popen`` after the fork would leave the child running with no handle to stop it. The caller acts
    on what was recorded once the step is done. Only in the main thread (elsewhere nothing is recorded).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, *_CLEANUP_SIGNALS)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_for(signum: int) -> None:
    """What the signal would have done here: Ctrl-C raises KeyboardInterrupt, the others SystemExit(128 + n)."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)
