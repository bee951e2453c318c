"""`nnunet-lmnet convert ...` through the main CLI: arguments, $nnUNet_raw, exit codes, fast start-up."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from convert_fixtures import kvasir_ids, make_kvasir, make_lgg, raw_entries
from nnunet_lmnet.cli import main


@pytest.fixture
def raw(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    (tmp_path / "raw").mkdir()
    return tmp_path / "raw"


def test_convert_kvasir_with_split_files(tmp_path, raw, capsys):
    ids = kvasir_ids(5)
    make_kvasir(tmp_path / "dl", ids)
    (tmp_path / "train.txt").write_text("\n".join(ids[:3]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(ids[3:]) + "\n")
    code = main(["convert", "kvasir", str(tmp_path / "dl"), "--dataset-id", "610", "--name", "Polyps",
                 "--num-processes", "1", "--splits", str(tmp_path / "train.txt"), str(tmp_path / "val.txt")])
    assert code == 0
    out = raw / "Dataset610_Polyps"
    assert "Wrote" in capsys.readouterr().out and raw_entries(raw) == {out.name}
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": sorted(ids[:3]),
                                                                     "val": sorted(ids[3:])}]

    code = main(["convert", "kvasir", str(tmp_path / "dl"), "--dataset-id", "610", "--name", "Polyps"])
    err = capsys.readouterr().err
    assert code == 2 and "nnunet-lmnet convert: error:" in err and "--overwrite" in err
    assert "Traceback" not in err


def test_errors_exit_2_without_traceback(tmp_path, monkeypatch, capsys):
    make_kvasir(tmp_path / "dl", kvasir_ids(2))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    assert main(["convert", "kvasir", str(tmp_path / "dl"), "--num-processes", "1"]) == 2
    assert "nnUNet_raw is not set" in capsys.readouterr().err

    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "busi", str(tmp_path / "dl")]) == 2
    assert "does not hold the BUSI data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "kvasir", str(tmp_path / "dl"), "--num-processes", "0"])
    assert exit_info.value.code == 2


def test_dataset_flags_reach_the_converter(tmp_path, raw):
    make_lgg(tmp_path / "lgg", {"TCGA_CS_4941_19960909": 3, "TCGA_HT_A61B_19991127": 2}, size=8, duplicate=False)
    assert main(["convert", "lgg", str(tmp_path / "lgg"), "--as-3d", "--spacing", "1", "1", "3",
                 "--num-processes", "1"]) == 0
    meta = json.loads((raw / "Dataset507_LGG3D" / "dataset.json").read_text())
    assert meta["file_ending"] == ".nii.gz" and "(1.0, 1.0, 3.0)" in meta["description"]


def test_help_for_every_dataset(capsys):
    for dataset in ("kvasir", "busi", "lgg", "isic2018", "btcv", "kits23"):
        with pytest.raises(SystemExit) as exit_info:
            main(["convert", dataset, "--help"])
        assert exit_info.value.code == 0
        assert "--dataset-id" in capsys.readouterr().out


def test_cli_module_imports_nothing_heavy():
    code = ("import sys, nnunet_lmnet.dataset_conversion.cli; "
            "print(sorted(m for m in ('numpy', 'PIL', 'nnunetv2', 'SimpleITK', 'skimage', 'torch', 'nibabel') "
            "if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
