"""One-line messages for operating-system errors (the CLI prints them instead of a traceback)."""
from __future__ import annotations

import errno

from nnunet_lmnet.errors import os_error_message


def test_a_missing_link_target_is_named(tmp_path):
    link = tmp_path / "img0001.nii.gz"
    link.symlink_to(tmp_path / "gone" / "img0001.nii.gz")
    message = os_error_message(FileNotFoundError(errno.ENOENT, "No such file or directory", str(link)))
    assert message.startswith(f"No such file or directory: {link}. It is a symbolic link to {tmp_path / 'gone'}")


def test_messages_name_the_files_and_say_what_to_do():
    message = os_error_message(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"))
    assert message == "Invalid cross-device link: /a -> /b."
    assert "Point nnUNet_raw" in os_error_message(OSError(errno.EROFS, "Read-only file system", "/mnt/ro"))
    assert os_error_message(OSError("no errno")) == "no errno."
