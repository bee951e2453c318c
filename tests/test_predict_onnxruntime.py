"""`export-onnx`, `predict --backend onnxruntime` and `benchmark-predict` on the tiny trained models of conftest.

Reference for the segmentations: the demo's own `nnUNetv2_predict` output (2D) and nnU-Net's predictor run with
PyTorch (`--backend torch`, 3D). nnU-Net accumulates the sliding-window logits in float16, so probabilities of the
two backends agree to ~1e-3, not to float32 precision.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_env import E2E_TRAINERS
from nnunet_lmnet.cli import main

TRAINER_2D = E2E_TRAINERS["lmnet"]
DATASET_2D = "Dataset980_Synthetic2D"


def _set_env(mp, env: dict) -> None:
    for key, value in env.items():
        if key.startswith("nnUNet_"):
            mp.setenv(key, value)


def _predict_args(images, out, dataset, configuration, trainer, *extra) -> list[str]:
    return ["predict", "-i", str(images), "-o", str(out), "-d", dataset, "-c", configuration, "-tr", trainer, "-f",
            "0", "-npp", "0", "-nps", "0", "--threads", "1", *extra]


def _seg(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def demo_onnx(demo_2d, tmp_path_factory):
    """The demo's LM-Net fold 0, exported once with the CLI (fixed patch): (root, env, onnx file, stdout)."""
    root, env, _ = demo_2d
    out = tmp_path_factory.mktemp("onnx") / "lmnet_fold0.onnx"
    with pytest.MonkeyPatch.context() as mp:
        _set_env(mp, env)
        code = main(["export-onnx", "-d", "980", "-c", "2d", "-tr", TRAINER_2D, "-f", "0", "-o", str(out),
                     "--spatial", "fixed"])
    assert code == 0 and out.is_file()
    return root, env, out


@pytest.fixture
def demo(demo_onnx, monkeypatch):
    _set_env(monkeypatch, demo_onnx[1])
    return demo_onnx


def test_export_records_the_model_in_the_onnx_metadata(demo):
    from nnunet_lmnet.export.onnx_metadata import file_sha256, read_metadata

    root, env, onnx_file = demo
    folder = Path(env["nnUNet_results"]) / DATASET_2D / f"{TRAINER_2D}__nnUNetPlans__2d"
    meta = read_metadata(onnx_file)
    plans = json.loads((folder / "plans.json").read_text())
    assert meta["plans"] == plans and meta["dataset_json"] == json.loads((folder / "dataset.json").read_text())
    assert meta["patch_size"] == plans["configurations"]["2d"]["patch_size"]
    assert meta["allowed_mirroring_axes"] == [0, 1] and meta["spatial_shape"] == "fixed"
    assert meta["total_stride"] == [16, 16] and meta["network_class"] == "LMNet"
    assert (meta["trainer"], meta["configuration"], meta["fold"]) == (TRAINER_2D, "2d", 0)
    assert meta["checkpoint_sha256"] == file_sha256(folder / "fold_0" / "checkpoint_final.pth")
    assert meta["parity"]["max_rel"] <= 1e-4 and meta["parity"]["checks"][0]["shape"] == [1, 1, 64, 64]
    assert meta["target"] == "onnxruntime" and isinstance(meta["onnxruntime_fusions"], dict)


def test_predict_onnxruntime_matches_nnunetv2_predict_2d(demo, tmp_path):
    root, env, onnx_file = demo
    images = Path(env["nnUNet_raw"]) / DATASET_2D / "imagesTs"
    assert main(_predict_args(images, tmp_path / "ort", "980", "2d", TRAINER_2D, "--backend", "onnxruntime",
                              "--onnx", str(onnx_file), "--save_probabilities")) == 0
    assert main(_predict_args(images, tmp_path / "torch", "980", "2d", TRAINER_2D, "--save_probabilities")) == 0
    cases = sorted(p.name for p in (root / "predictions").glob("*.png"))
    assert cases == ["synth_010.png", "synth_011.png"]
    for case in cases:
        reference = _seg(root / "predictions" / case)  # nnUNetv2_predict, run by the demo
        assert (_seg(tmp_path / "ort" / case) == reference).mean() >= 0.999
        assert np.array_equal(_seg(tmp_path / "torch" / case), reference)
        p_ort, p_torch = (np.load(tmp_path / b / case.replace(".png", ".npz"))["probabilities"]
                          for b in ("ort", "torch"))
        assert p_ort.shape == p_torch.shape and np.abs(p_ort - p_torch).max() < 1e-2
    assert json.loads((tmp_path / "ort" / "plans.json").read_text()) == json.loads(
        (root / "predictions" / "plans.json").read_text())


def test_predict_onnxruntime_3d_anisotropic_exports_the_fold_itself(preprocessed_3d, trained_3d, monkeypatch,
                                                                     tmp_path, capsys):
    root, env = preprocessed_3d
    trainer = E2E_TRAINERS["lgmsnet"]
    trained_3d("lgmsnet")
    _set_env(monkeypatch, env)
    images = next(Path(env["nnUNet_raw"]).glob("Dataset981_*")) / "imagesTs"
    assert main(_predict_args(images, tmp_path / "ort", "981", "3d_fullres", trainer, "--backend", "onnxruntime",
                              "--save_probabilities")) == 0
    assert "ONNX Runtime vs PyTorch: input [1, 1, 20, 48, 40]" in capsys.readouterr().out
    assert main(_predict_args(images, tmp_path / "torch", "981", "3d_fullres", trainer, "--save_probabilities")) == 0
    seg_ort, seg_torch = _seg(tmp_path / "ort" / "synth_006.nii.gz"), _seg(tmp_path / "torch" / "synth_006.nii.gz")
    assert len(np.unique(seg_torch)) > 1 and (seg_ort == seg_torch).mean() >= 0.999
    p_ort, p_torch = (np.load(tmp_path / b / "synth_006.npz")["probabilities"] for b in ("ort", "torch"))
    assert np.abs(p_ort - p_torch).max() < 1e-2


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture
def fake_results(demo, tmp_path, monkeypatch):
    """A results folder of our own with a copy of the demo model's jsons: (model folder, demo model folder)."""
    _, env, _ = demo
    real = Path(env["nnUNet_results"]) / DATASET_2D / f"{TRAINER_2D}__nnUNetPlans__2d"
    folder = tmp_path / "results" / DATASET_2D / real.name
    folder.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(real / name, folder / name)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    return folder, real


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line, no traceback
    return err


def test_model_folder_errors(fake_results, demo, tmp_path, capsys):
    folder, real = fake_results
    images = Path(demo[1]["nnUNet_raw"]) / DATASET_2D / "imagesTs"
    argv = _predict_args(images, tmp_path / "out", DATASET_2D, "2d", TRAINER_2D)
    (folder / "fold_0").mkdir()
    (folder / "fold_0" / "checkpoint_latest.pth").write_bytes(b"x")
    other_fold = list(argv)
    other_fold[argv.index("-f") + 1] = "1"
    err = _error(capsys, other_fold)
    assert "has no fold_1 (trained folds: fold_0)" in err
    err = _error(capsys, argv)
    assert "checkpoint_latest.pth but no checkpoint_final.pth" in err and "has not finished" in err
    assert "--checkpoint checkpoint_latest.pth" in err
    data = (real / "fold_0" / "checkpoint_final.pth").read_bytes()
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(data[: len(data) // 2])  # an interrupted copy
    err = _error(capsys, argv)
    assert "checkpoint_final.pth cannot be read" in err and "partly written" in err
    err = _error(capsys, ["export-onnx", "-d", DATASET_2D, "-c", "2d", "-tr", "nnUNetTrainer", "-f", "0", "-o",
                          str(tmp_path / "x.onnx")])
    assert "no trained model" in err and TRAINER_2D in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.onnx").exists()


def test_input_with_the_wrong_channels_is_refused(demo, tmp_path, capsys):
    _, env, _ = demo
    images = Path(env["nnUNet_raw"]) / DATASET_2D / "imagesTs"
    wrong = tmp_path / "images"
    wrong.mkdir()
    shutil.copy(images / "synth_010_0000.png", wrong / "synth_010_0000.png")
    shutil.copy(images / "synth_010_0000.png", wrong / "synth_010_0001.png")
    err = _error(capsys, _predict_args(wrong, tmp_path / "out", "980", "2d", TRAINER_2D))
    assert "case 'synth_010'" in err and "_0000, _0001" in err and "trained on 1 channel(s)" in err
    (wrong / "synth_010_0000.png").unlink()
    assert "has the channel files _0001" in _error(capsys, _predict_args(wrong, tmp_path / "out", "980", "2d",
                                                                         TRAINER_2D))
    err = _error(capsys, _predict_args(images, images / "pred", "980", "2d", TRAINER_2D))
    assert "is (inside) the input folder" in err and not (images / "pred").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no input images" in _error(capsys, _predict_args(empty, tmp_path / "out", "980", "2d", TRAINER_2D))
    assert not (tmp_path / "out").exists()


def test_missing_deploy_extra_is_named(demo, tmp_path, capsys, monkeypatch):
    _, env, _ = demo
    images = Path(env["nnUNet_raw"]) / DATASET_2D / "imagesTs"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    err = _error(capsys, _predict_args(images, tmp_path / "out", "980", "2d", TRAINER_2D, "--backend",
                                       "onnxruntime"))
    assert "predict --backend onnxruntime needs onnxruntime" in err and "pip install 'nnunet-lmnet[deploy]'" in err
    err = _error(capsys, ["export-onnx", "-d", "980", "-c", "2d", "-tr", TRAINER_2D, "-f", "0", "-o",
                          str(tmp_path / "x.onnx")])
    assert "export-onnx needs onnxruntime" in err and "pip install 'nnunet-lmnet[deploy]'" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.onnx").exists()


def test_onnx_file_of_another_fold_is_refused(fake_results, demo, tmp_path, capsys):
    folder, real = fake_results
    (folder / "fold_1").symlink_to(real / "fold_0")  # same checkpoint, but it is fold 1
    images = Path(demo[1]["nnUNet_raw"]) / DATASET_2D / "imagesTs"
    argv = _predict_args(images, tmp_path / "out", DATASET_2D, "2d", TRAINER_2D, "--backend", "onnxruntime",
                         "--onnx", str(demo[2]))
    argv[argv.index("-f") + 1] = "1"
    err = _error(capsys, argv)
    assert "was exported from fold 0, not 1" in err


def test_export_writes_nothing_when_parity_fails(demo, tmp_path, capsys, monkeypatch):
    """On the model-folder route, an ONNX graph that computes something else than the predictor's network is
    refused and nothing is written (the exported network is swapped for a small wrong one to keep this fast)."""
    import torch

    from nnunet_lmnet.export import onnx_export

    wrong = torch.nn.Conv2d(1, 3, 1).eval()  # right shapes, other function
    monkeypatch.setattr(onnx_export, "deployment_copy", lambda net: wrong)
    out = tmp_path / "lmnet.onnx"
    err = _error(capsys, ["export-onnx", "-d", "980", "-c", "2d", "-tr", TRAINER_2D, "-f", "0", "-o", str(out)])
    assert "differs from PyTorch's by" in err and "the ONNX file was not written" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ benchmark-predict
def test_benchmark_predict_times_every_run(demo, tmp_path, monkeypatch, capsys):
    from untrained_models import default_network_model_folder

    _, env, onnx_file = demo
    results = tmp_path / "results"
    (results / DATASET_2D).mkdir(parents=True)
    ours = Path(env["nnUNet_results"]) / DATASET_2D / f"{TRAINER_2D}__nnUNetPlans__2d"
    (results / DATASET_2D / ours.name).symlink_to(ours)
    default_network_model_folder(Path(env["nnUNet_preprocessed"]) / DATASET_2D, results, "2d")
    monkeypatch.setenv("nnUNet_results", str(results))
    out = tmp_path / "report"
    images = Path(env["nnUNet_raw"]) / DATASET_2D / "imagesTs"
    assert main(["benchmark-predict", "-i", str(images), "-d", "980", "-c", "2d", "-tr", TRAINER_2D, "--onnx",
                 str(onnx_file), "--repeats", "2", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "benchmark_predict.json").read_text())
    runs = {(r["network"], r["backend"], r["tta"]) for r in result["summary"]}
    assert runs == {(n, b, t) for n, b in [("default", "torch"), ("ours", "torch"), ("ours", "onnxruntime")]
                    for t in (True, False)}
    assert len(result["records"]) == 2 * 2 * 6  # repeats x cases x runs
    first = result["records"][:6]  # interleaved: one case through every run before the next case
    assert len({r["case"] for r in first}) == 1 and len({(r["network"], r["backend"], r["tta"]) for r in first}) == 6
    for r in result["records"]:
        parts = r["preprocessing_s"] + r["network_s"] + r["export_s"]
        assert 0 < r["network_s"] and abs(parts - r["total_s"]) < 1e-6
    for row in result["summary"]:
        assert row["runs"] == 4
        if row["network"] == "default":
            assert row["total_ratio_to_default"] == 1.0
    with_tta = {(r["network"], r["backend"]): r for r in result["summary"] if r["tta"]}
    no_tta = {(r["network"], r["backend"]): r for r in result["summary"] if not r["tta"]}
    assert with_tta[("default", "torch")]["network_s"] > no_tta[("default", "torch")]["network_s"]  # 4 vs 1 pass
    assert result["machine"]["threads"] == 1 and result["machine"]["onnxruntime_threads"] >= 1
    md = (out / "benchmark_predict.md").read_text()
    assert md in printed and "| ours | onnxruntime | yes |" in md and "Target: ours on ONNX Runtime" in md
    assert "torch 1 threads (--threads)" in md
