"""One conversion per dataset id at a time, and no id that nnU-Net would find under two names.

- :func:`dataset_id_lock`: an exclusive ``flock`` on ``<raw>/.DatasetXXX.lock``, held for the whole conversion. A
  second conversion of the same id (same or another name, ``--overwrite`` or not) stops at once with the first
  one's PID. The kernel drops the lock when its holder dies, even by SIGKILL, so a killed run never blocks the next
  one; the file itself is removed on release.
- :func:`id_clashes`: nnU-Net resolves ``-d 501`` by looking for ``Dataset501*`` folders in ``$nnUNet_raw``,
  ``$nnUNet_preprocessed`` and ``$nnUNet_results`` and refuses an id that has two names there, so a new name for an
  id that is in use anywhere would break the old dataset and the new one.

Only the standard library is imported (the CLI imports the converters' common module at start-up).
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nnunet_lmnet.errors import UserError

# Where nnU-Net looks a dataset id up, besides the output root: environment variable -> how messages call it.
NNUNET_FOLDERS = ("nnUNet_preprocessed", "nnUNet_results")


def lock_path(root: Path, dataset_id: int) -> Path:
    return root / f".Dataset{dataset_id:03d}.lock"


def _holder(path: Path) -> str:
    """'process 123 on host h' from the lock file; the holder writes it just after locking, so retry briefly."""
    for _ in range(5):
        try:
            text = path.read_text(encoding="utf-8").split()
        except OSError:
            text = []
        if len(text) >= 2 and text[0].isdigit():
            return f"process {text[0]} on host {text[1]}"
        time.sleep(0.02)
    return "another process"


@contextmanager
def dataset_id_lock(root: Path, dataset_id: int) -> Iterator[None]:
    """Hold the lock for ``dataset_id`` in ``root`` while the block runs; a UserError naming the holder if taken."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): nnU-Net's platforms are, so go without the lock
        yield
        return
    path = lock_path(root, dataset_id)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another conversion ({_holder(path)}) is converting dataset id {dataset_id} into "
                            f"{root} right now (it holds {path}). Wait for it to finish or stop it, then run this "
                            f"one again; two conversions of one id would replace each other's result.") from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder unlinks the file on release: if that happened between our open and our lock, we hold
        # a lock on a file nobody else will open. Start again on the path's current file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname() or 'host'}\n".encode())
        yield
    finally:
        try:
            os.unlink(path)  # while still locked: nobody can have locked this file meanwhile
        except OSError:
            pass
        os.close(fd)


def remove_stale_locks(root: Path) -> None:
    """Delete the lock files in ``root`` that nobody holds (their holder was SIGKILLed before it could delete them).

    Safe against a conversion starting meanwhile: it re-checks after locking that its file is still the one at the
    path (:func:`dataset_id_lock`).
    """
    try:
        import fcntl
    except ImportError:
        return
    for path in root.glob(".Dataset[0-9][0-9][0-9].lock"):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:  # held by a running conversion (BlockingIOError), or already gone
            pass
        finally:
            os.close(fd)


def _same_id(folder: Path, dataset_id: int) -> list[str]:
    """Names of the folders in ``folder`` that nnU-Net takes for ``dataset_id`` (its prefix match, folders only)."""
    prefix = f"Dataset{dataset_id:03d}"
    try:
        entries = list(folder.iterdir())
    except OSError:  # missing or unreadable: nnU-Net finds nothing there either
        return []
    return sorted(p.name for p in entries if p.name.startswith(prefix) and p.is_dir())


def id_clashes(root: Path, dataset_id: int, folder: str) -> str | None:
    """None if ``dataset_id`` is free for ``folder``; otherwise a sentence saying where which other names hold it."""
    places = [(root, "")]
    for var in NNUNET_FOLDERS:
        value = os.environ.get(var)
        if value and Path(value).expanduser().resolve() != root:
            places.append((Path(value).expanduser().resolve(), f" (${var})"))
    found = []
    for place, label in places:
        others = [name for name in _same_id(place, dataset_id) if name != folder]
        if others:
            found.append(f"{place}{label} already holds {', '.join(others)} with dataset id {dataset_id}")
    return "; ".join(found) or None


def check_id_free(root: Path, dataset_id: int, folder: str, when: str = "") -> None:
    clash = id_clashes(root, dataset_id, folder)
    if clash:
        raise UserError(f"{clash}{when}. nnU-Net looks dataset ids up in nnUNet_raw, nnUNet_preprocessed and "
                        f"nnUNet_results and refuses an id with two names, so {folder} would break both. Choose "
                        f"another --dataset-id, or remove or rename the other folder(s).")
