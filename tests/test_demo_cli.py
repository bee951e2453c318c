"""`nnunet-lmnet demo` safety and environment, without running nnU-Net (the full pipeline is in test_e2e_nnunet)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_lmnet.cli import main
from nnunet_lmnet.demo import MARKER, prepare_output_folder
from nnunet_lmnet.errors import UserError
from nnunet_lmnet.nnunet_commands import nnunet_environment


@pytest.fixture(autouse=True)
def no_pipeline(monkeypatch):
    """These tests must never start nnU-Net, even if the folder check they test is broken."""
    import nnunet_lmnet.nnunet_commands as commands
    import nnunet_lmnet.synthetic_dataset as synthetic

    def refuse(*args, **kwargs):
        raise AssertionError("the demo pipeline would have started")

    monkeypatch.setattr(commands, "run", refuse)
    monkeypatch.setattr(synthetic, "write_synthetic_dataset", refuse)


def _fake_demo_run(out: Path) -> None:
    """What a finished demo leaves in its folder."""
    prepare_output_folder(out, overwrite=False)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "predictions"):
        (out / name / "sub").mkdir(parents=True)
        (out / name / "sub" / "f.txt").write_text("x")


def test_overwrite_never_deletes_a_folder_the_demo_did_not_make(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    assert main(["demo", "--out", str(user), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert str(user) in err and "was not made by the demo" in err and "Choose a new or empty folder" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"]


def test_overwrite_refuses_the_working_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", ".", "--overwrite"]) == 2
    assert "was not made by the demo" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_overwrite_clears_only_an_earlier_demo_run(tmp_path):
    out = tmp_path / "demo"
    _fake_demo_run(out)
    with pytest.raises(UserError, match="holds an earlier demo run: pass --overwrite"):
        prepare_output_folder(out, overwrite=False)
    assert prepare_output_folder(out, overwrite=True) == out.resolve()
    assert [p.name for p in out.iterdir()] == [MARKER]

    # a file the user added to a demo folder is never deleted
    _fake_demo_run(tmp_path / "demo2")
    (tmp_path / "demo2" / "my_notes.md").write_text("keep")
    with pytest.raises(UserError, match=r"files the demo did not make \(my_notes.md\)"):
        prepare_output_folder(tmp_path / "demo2", overwrite=True)
    assert (tmp_path / "demo2" / "my_notes.md").read_text() == "keep"
    assert (tmp_path / "demo2" / "predictions" / "sub" / "f.txt").exists()


def test_overwrite_removes_a_link_not_its_target(tmp_path):
    out = tmp_path / "demo"
    prepare_output_folder(out, overwrite=False)
    elsewhere = tmp_path / "big_disk_results"
    elsewhere.mkdir()
    (elsewhere / "model.pth").write_text("x")
    (out / "nnUNet_results").symlink_to(elsewhere)
    prepare_output_folder(out, overwrite=True)
    assert not (out / "nnUNet_results").exists() and (elsewhere / "model.pth").exists()


def test_new_and_empty_folders_are_used_and_marked(tmp_path):
    assert (prepare_output_folder(tmp_path / "a" / "b", overwrite=False) / MARKER).is_file()
    (tmp_path / "empty").mkdir()
    assert (prepare_output_folder(tmp_path / "empty", overwrite=True) / MARKER).is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        prepare_output_folder(tmp_path / "file", overwrite=True)


def test_nnunet_commands_spin_briefly_unless_the_user_chose(tmp_path, monkeypatch):
    """Spinning OpenMP threads made CPU training 16-39x slower while another process held a core."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    env = nnunet_environment(tmp_path)
    assert env["GOMP_SPINCOUNT"] == "3000" and "OMP_WAIT_POLICY" not in env
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert "GOMP_SPINCOUNT" not in nnunet_environment(tmp_path)  # the user's choice wins
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    assert nnunet_environment(tmp_path)["GOMP_SPINCOUNT"] == "0"


def test_the_demo_starts_nnunet_with_a_short_spin(tmp_path, monkeypatch):
    import nnunet_lmnet.nnunet_commands as commands
    import nnunet_lmnet.synthetic_dataset as synthetic

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    started = []

    class Stop(Exception):
        pass

    def record(name, *args, env, **kwargs):
        started.append((name, env))
        raise Stop

    monkeypatch.setattr(synthetic, "write_synthetic_dataset", lambda root, *a, **k: Path(root) / "Dataset980_x")
    monkeypatch.setattr(commands, "run", record)
    from nnunet_lmnet.demo import run_demo

    with pytest.raises(Stop):
        run_demo(tmp_path / "demo")
    assert started[0][0] == "nnUNetv2_plan_and_preprocess"
    assert started[0][1]["GOMP_SPINCOUNT"] == "3000"
