"""Errors meant for the person at the keyboard, and how the CLI reports errors without a traceback.

Exit codes: 2 for a :class:`UserError` (bad input or set-up), 1 for an operating-system error (disk full, read-only
or unreadable file), 130 for Ctrl-C, 128+N for signal N (SIGTERM, SIGHUP).
"""
from __future__ import annotations

import errno
import os

EXIT_USER_ERROR = 2
EXIT_OS_ERROR = 1
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input or set-up. The message names the file or setting and says what to do."""


_FOLDERS = "nnUNet_raw / nnUNet_preprocessed / nnUNet_results (or --out)"

# errno -> what to do; the message starts with what happened to which file.
_ADVICE = {
    errno.ENOSPC: f"The disk is full. Free some space, or point {_FOLDERS} at a disk with room, and run the "
                  f"command again.",
    errno.EDQUOT: f"Your disk quota is used up. Free some space, or point {_FOLDERS} at another disk, and run the "
                  f"command again.",
    errno.EROFS: f"That file system is read-only. Point {_FOLDERS} at a folder you can write to.",
    errno.EACCES: f"You may not access it. Fix its permissions, or point {_FOLDERS} at a folder you can write to.",
    errno.EPERM: f"You may not access it. Fix its permissions, or point {_FOLDERS} at a folder you can write to.",
    errno.ENOENT: "Check the path; if a command deleted or moved it meanwhile, run the command again.",
    errno.ELOOP: "A symbolic link points (through other links) back to itself. Replace it with the real file.",
    errno.EIO: "The disk or the file is damaged: copy the data again from the original download.",
}


def os_error_message(e: OSError) -> str:
    """One line for an OSError: what failed, on which file, and what to do."""
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    what = e.strerror or str(e)
    if paths:
        what = f"{what}: {' -> '.join(paths)}"
    if e.errno == errno.ENOENT and paths and os.path.islink(paths[0]):
        return (f"{what}. It is a symbolic link to {os.readlink(paths[0])}, which does not exist: restore the "
                f"target or replace the link with the file.")
    advice = _ADVICE.get(e.errno, "")
    return f"{what}. {advice}".rstrip()
