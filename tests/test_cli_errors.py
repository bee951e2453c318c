"""One-line messages for operating-system errors (the CLI prints them instead of a traceback)."""
from __future__ import annotations

import errno

import pytest

from nnunet_lmnet.cli import main
from nnunet_lmnet.errors import UserError, os_error_message


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


# ------------------------------------------------------------------------------------------ bad values on the CLI

@pytest.mark.parametrize("argv, bad", [
    (["derive-plans", "-d", "abc", "--arch", "lmnet"], "argument -d: expected a dataset id (e.g. 501) or a dataset "
                                                       "name (e.g. Dataset501_KvasirSEG), got 'abc'"),
    (["derive-plans", "-d", "-5", "--arch", "lmnet"], "argument -d: expected a dataset id"),
    (["info", "--arch", "lmnet", "--dim", "2", "--in-channels", "3", "--classes", "0", "--patch", "64", "64"],
     "argument --classes: expected a positive integer, got '0'"),
    (["info", "--arch", "lmnet", "--dim", "2", "--in-channels", "-1", "--classes", "2", "--patch", "64", "64"],
     "argument --in-channels: expected a positive integer, got '-1'"),
    (["info", "--arch", "lgmsnet", "--dim", "3", "--in-channels", "1", "--classes", "2", "--patch", "32", "0", "32"],
     "argument --patch: expected a positive integer, got '0'"),
])
def test_bad_values_end_in_one_error_line_naming_them(argv, bad, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [x for x in err.splitlines() if "error:" in x]
    assert line.startswith(f"nnunet-lmnet {argv[0]}: error: {bad}")


def test_the_python_functions_refuse_the_same_values(tmp_path, monkeypatch):
    from nnunet_lmnet.info import describe
    from nnunet_lmnet.plans.cli import derive_plans_file

    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    with pytest.raises(UserError, match="dataset 'abc' is neither a dataset id"):
        derive_plans_file("abc", "lmnet")
    for kwargs, match in ((dict(classes=0), "--classes takes positive integers, got 0"),
                          (dict(in_channels=-1), "--in-channels takes positive integers, got -1"),
                          (dict(patch=[64, 0]), "--patch takes positive integers, got 0")):
        args = dict(arch="lmnet", dim=2, in_channels=3, classes=2, patch=[64, 64]) | kwargs
        with pytest.raises(UserError, match=match):
            describe(**args)
