"""How nnU-Net finds the trainers: the printed folder, the lookup itself, auto-registration and the doctor."""
import contextlib
import io
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_lmnet._autodiscovery import trainer_folder
from nnunet_lmnet.cli import main

CHILD = [sys.executable, "-c", "import os; print(os.environ.get('nnUNet_extTrainer', ''))"]


def _child_env(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", "NNUNET_LMNET_NO_AUTODISCOVERY")}
    env.update(overrides)
    return env


def _pth_installed() -> bool:
    return any(Path(p, "nnunet_lmnet_autodiscovery.pth").exists() for p in site.getsitepackages())


def test_trainer_path_prints_a_folder_with_only_the_trainer_module(capsys):
    assert main(["trainer-path"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder.is_absolute() and folder == Path(trainer_folder())
    modules = sorted(p.name for p in folder.iterdir() if p.suffix == ".py")
    assert modules == ["__init__.py", "nnunet_lmnet_trainers.py"]


def _find(name, ext_value, monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", ext_value)
    with contextlib.redirect_stdout(io.StringIO()):
        return recursive_find_trainer_class_by_name(name)


def test_nnunet_finds_the_real_classes_without_duplicate_imports(monkeypatch):
    from nnunet_lmnet.training import trainers

    assert _find("nnUNetTrainerLMNet", trainer_folder(), monkeypatch) is trainers.nnUNetTrainerLMNet
    assert _find("nnUNetTrainerLGMSNet_5epochs", trainer_folder(), monkeypatch).__mro__[1] is \
        trainers.nnUNetTrainerLGMSNet


def test_a_users_own_folder_keeps_working_beside_ours(monkeypatch, tmp_path):
    (tmp_path / "my_lab_trainers.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class nnUNetTrainerMyLab(nnUNetTrainer):\n    pass\n"
    )
    value = os.pathsep.join([trainer_folder(), str(tmp_path)])  # ours first: searching it must not break theirs
    assert _find("nnUNetTrainerMyLab", value, monkeypatch).__name__ == "nnUNetTrainerMyLab"
    assert _find("nnUNetTrainerLMNet", value, monkeypatch).__name__ == "nnUNetTrainerLMNet"


@pytest.mark.skipif(not _pth_installed(), reason="the .pth is only installed by a regular (non-editable) install")
def test_installing_registers_the_folder_automatically():
    out = subprocess.run(CHILD, env=_child_env(), capture_output=True, text=True, check=True).stdout.strip()
    assert out == trainer_folder()
    # a user's own entries are kept, ours appended
    out = subprocess.run(CHILD, env=_child_env(nnUNet_extTrainer="/lab/trainers"), capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == os.pathsep.join(["/lab/trainers", trainer_folder()])
    out = subprocess.run(CHILD, env=_child_env(NNUNET_LMNET_NO_AUTODISCOVERY="1"), capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""


def test_register_appends_once(monkeypatch):
    from nnunet_lmnet import _autodiscovery

    monkeypatch.setenv("nnUNet_extTrainer", "/lab/trainers")
    monkeypatch.delenv("NNUNET_LMNET_NO_AUTODISCOVERY", raising=False)
    _autodiscovery.register()
    _autodiscovery.register()
    assert os.environ["nnUNet_extTrainer"] == os.pathsep.join(["/lab/trainers", trainer_folder()])


def test_doctor_reports_the_fix_when_the_folder_is_missing(monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_extTrainer", "/elsewhere")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert 'export nnUNet_extTrainer="${nnUNet_extTrainer:+$nnUNet_extTrainer:}$(nnunet-lmnet trainer-path)"' in out


def test_doctor_is_happy_when_set_up(monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_extTrainer", trainer_folder())
    assert main(["doctor"]) == 0
    assert "OK: nnU-Net finds nnUNetTrainerLMNet, nnUNetTrainerLGMSNet" in capsys.readouterr().out
