"""`nnunet-lmnet cross-evaluate`: the demo's trained 2D LM-Net (dataset 980, fold 0) predicts unseen datasets."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from nnunet_env import E2E_TRAINERS
from nnunet_lmnet.cli import main

TRAINER = E2E_TRAINERS["lmnet"]
TWIN = "nnUNetTrainerTwin"  # the same model folder under a second name: a second "trainer" with equal predictions


@pytest.fixture(scope="module")
def zero_shot(demo_2d, tmp_path_factory):
    """Own nnUNet_raw/nnUNet_results (the fixture's folders stay untouched): the demo model linked in twice, and
    target datasets 985 (compatible, imagesTs/labelsTs), 986 (2 channels), 987 (label value 3), 988 (imagesTr)."""
    from nnunet_lmnet.synthetic_dataset import write_synthetic_dataset

    root, env, _ = demo_2d
    base = tmp_path_factory.mktemp("zero_shot")
    raw, results = base / "nnUNet_raw", base / "nnUNet_results"
    source = next((root / "nnUNet_results").glob("Dataset980_*"))
    model = source / f"{TRAINER}__nnUNetPlans__2d"
    (results / source.name).mkdir(parents=True)
    for t in (TRAINER, TWIN):
        (results / source.name / f"{t}__nnUNetPlans__2d").symlink_to(model, target_is_directory=True)
    broken = results / source.name / "nnUNetTrainerBroken__nnUNetPlans__2d"
    (broken / "fold_0").mkdir(parents=True)
    for f in ("plans.json", "dataset.json"):
        (broken / f).symlink_to(model / f)
    (broken / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")

    good = write_synthetic_dataset(raw, 985, dim=2, num_train=0, num_test=3, seed=5)
    two = shutil.copytree(good, raw / "Dataset986_TwoChannels")
    for f in sorted((two / "imagesTs").glob("*_0000.png")):
        shutil.copy(f, f.with_name(f.name.replace("_0000", "_0001")))
    dj = json.loads((two / "dataset.json").read_text())
    dj["channel_names"] = {"0": "a", "1": "b"}
    (two / "dataset.json").write_text(json.dumps(dj))
    bad_label = shutil.copytree(good, raw / "Dataset987_UnknownLabel")
    lab = bad_label / "labelsTs" / "synth_001.png"
    arr = np.array(Image.open(lab))
    arr[:3, :3] = 3
    Image.fromarray(arr).save(lab)
    write_synthetic_dataset(raw, 988, dim=2, num_train=2, num_test=0, seed=6)  # imagesTs empty -> imagesTr
    return {"env": env, "raw": raw, "results": results, "source": source.name, "base": base}


@pytest.fixture
def zs_env(zero_shot, monkeypatch):
    for k, v in zero_shot["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("nnUNet_raw", str(zero_shot["raw"]))
    monkeypatch.setenv("nnUNet_results", str(zero_shot["results"]))
    return zero_shot


def _args(*extra):
    return ["cross-evaluate", "-d", "980", "-c", "2d", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
            "-np", "1", *extra]


def test_cross_evaluate_two_trainers(zs_env, tmp_path, capsys, one_thread):
    out = tmp_path / "xe"
    assert main(_args("-tr", TRAINER, TWIN, "--target", "985", "--out", str(out))) == 0
    printed = capsys.readouterr().out
    for f in ("cross_evaluation.md", "cross_evaluation.csv", "paired_tests.csv", "per_case.csv",
              "dice_per_case.png"):
        assert (out / f).is_file(), f
    target = zs_env["raw"] / "Dataset985_Synthetic2D"
    for t in (TRAINER, TWIN):
        pred = out / "predictions" / t
        assert sorted(p.name for p in pred.glob("*.png")) == ["synth_000.png", "synth_001.png", "synth_002.png"]
        summary = json.loads((pred / "summary.json").read_text())  # nnU-Net's format, paths in the final folder
        assert {e["prediction_file"] for e in summary["metric_per_case"]} == {str(pred / f"synth_00{i}.png")
                                                                             for i in range(3)}
        assert {"TP", "FP", "FN", "TN"} <= set(summary["metric_per_case"][0]["metrics"]["1"])
    assert not list((out / "predictions").glob(".*"))  # no partial folders left
    assert ".partial" not in (out / "predictions" / TRAINER / "predict_from_raw_data_args.json").read_text()

    # the zero-shot numbers, checked against the saved predictions and the target's labels with plain numpy
    dice, precision = {1: [], 2: []}, {1: [], 2: []}
    for i in range(3):
        pred = np.array(Image.open(out / "predictions" / TRAINER / f"synth_00{i}.png"))
        ref = np.array(Image.open(target / "labelsTs" / f"synth_00{i}.png"))
        assert pred.shape == ref.shape  # native resolution of the target
        for lab in (1, 2):
            tp, fp, fn = [int(np.sum(m)) for m in ((pred == lab) & (ref == lab), (pred == lab) & (ref != lab),
                                                   (pred != lab) & (ref == lab))]
            dice[lab].append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan)
            precision[lab].append(tp / (tp + fp) if tp + fp else np.nan)
    table = pd.read_csv(out / "cross_evaluation.csv", dtype={"class": str}).set_index(["trainer", "metric",
                                                                                        "class"])
    r = table.loc[(TRAINER, "Dice", "mean")]
    assert r["zero_shot_mean"] == pytest.approx(np.mean([np.nanmean(dice[1]), np.nanmean(dice[2])]))
    assert table.loc[(TRAINER, "Dice", "2"), "zero_shot_mean"] == pytest.approx(np.nanmean(dice[2]))
    if np.isfinite(precision[1]).any():
        assert table.loc[(TRAINER, "Precision", "1"), "zero_shot_mean"] == pytest.approx(np.nanmean(precision[1]))
    assert r["zero_shot_n_cases"] == 3 and r["source"] == zs_env["source"] and r["folds"] == 0
    # in-domain CV beside it: fold 0's validation summary of the model
    cv = json.loads((zs_env["results"] / zs_env["source"] / f"{TRAINER}__nnUNetPlans__2d" / "fold_0" /
                     "validation" / "summary.json").read_text())
    assert r["cv_mean"] == pytest.approx(cv["foreground_mean"]["Dice"]) and r["cv_n_folds"] == 1
    assert r["zero_shot_minus_cv"] == pytest.approx(r["zero_shot_mean"] - r["cv_mean"])

    per_case = pd.read_csv(out / "per_case.csv", dtype={"class": str})
    assert set(per_case["case"]) == {"synth_000", "synth_001", "synth_002"} and set(per_case["folds"]) == {0}
    paired = pd.read_csv(out / "paired_tests.csv", dtype={"class": str}).set_index(["metric", "class"])
    assert paired.loc[("Dice", "mean"), "n"] == 3 and paired.loc[("Dice", "mean"), "mean_diff"] == 0
    assert bool(paired.loc[("Dice", "mean"), "within_spread"])  # identical models

    md = (out / "cross_evaluation.md").read_text()
    assert md in printed
    assert f"# Zero-shot evaluation: {zs_env['source']} → Dataset985_Synthetic2D, 2d" in md
    assert "3 cases from imagesTs/ + labelsTs/" in md
    assert "## In-domain cross-validation vs zero-shot on Dataset985_Synthetic2D" in md
    assert f"- `{TWIN}`: Δ mean Dice = +0.0000" in md and "**within nnU-Net's run-to-run spread" in md
    assert "resized to 256×256" in md  # the protocol difference is stated
    with Image.open(out / "dice_per_case.png") as im:
        assert im.format == "PNG"

    # a second run refuses to replace the results without --overwrite, before predicting anything
    assert main(_args("-tr", TRAINER, "--target", "985", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err


def test_cross_evaluate_compatibility_errors(zs_env, tmp_path, capsys):
    out = tmp_path / "xe"
    assert main(_args("-tr", TRAINER, "--target", "Dataset986_TwoChannels", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "channel mismatch" in err and "takes 1 input channel(s)" in err and "declares 2" in err

    assert main(_args("-tr", TRAINER, "--target", "987", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "label mismatch" in err and "synth_001.png" in err and "[3]" in err

    # dataset.json says 1 channel, but one image is RGB
    rgb = shutil.copytree(zs_env["raw"] / "Dataset985_Synthetic2D", tmp_path / "Dataset989_RGB")
    img = rgb / "imagesTs" / "synth_002_0000.png"
    Image.fromarray(np.stack([np.array(Image.open(img))] * 3, axis=-1)).save(img)
    assert main(_args("-tr", TRAINER, "--target", str(rgb), "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "channel mismatch" in err and "synth_002 with 3" in err

    # a label value the model does not know, declared in dataset.json
    dj_file = rgb / "dataset.json"
    shutil.copy(zs_env["raw"] / "Dataset985_Synthetic2D" / "imagesTs" / "synth_002_0000.png", img)
    dj = json.loads(dj_file.read_text())
    dj["labels"]["extra"] = 4
    dj_file.write_text(json.dumps(dj))
    assert main(_args("-tr", TRAINER, "--target", str(rgb), "--out", str(out))) == 2
    assert "declares label value(s) [4]" in capsys.readouterr().err

    # an image without a label
    dj["labels"].pop("extra")
    dj_file.write_text(json.dumps(dj))
    (rgb / "labelsTs" / "synth_001.png").unlink()
    assert main(_args("-tr", TRAINER, "--target", str(rgb), "--out", str(out))) == 2
    assert "synth_001" in capsys.readouterr().err

    # folds without a checkpoint, unknown target
    assert main(_args("-tr", TRAINER, "--target", "985", "-f", "0", "1", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "fold(s) 1 have no checkpoint_final.pth" in err
    assert main(_args("-tr", TRAINER, "--target", "999", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "no such dataset" in err and "Dataset985_Synthetic2D" in err
    assert not out.exists()  # nothing was written by any of these


def test_cross_evaluate_broken_model_leaves_nothing(zs_env, tmp_path, capsys, one_thread):
    out = tmp_path / "xe"
    assert main(_args("-tr", TRAINER, "nnUNetTrainerBroken", "--target", "985", "--out", str(out))) == 2
    err = capsys.readouterr().err
    assert "cannot load the model" in err and "nnUNetTrainerBroken__nnUNetPlans__2d" in err
    assert not out.exists()  # the first trainer's finished predictions were removed with the partial folder


def test_cross_evaluate_default_out_dir_refuses_existing(zs_env, capsys):
    default = zs_env["results"] / zs_env["source"] / "cross_evaluation_2d__Dataset985_Synthetic2D"
    default.mkdir()
    (default / "cross_evaluation.md").write_text("earlier")
    try:
        assert main(_args("-tr", TRAINER, "--target", "985")) == 2
        err = capsys.readouterr().err
        assert str(default / "cross_evaluation.md") in err and "--overwrite" in err
        assert (default / "cross_evaluation.md").read_text() == "earlier"
    finally:
        shutil.rmtree(default)


def test_target_split_choice(zs_env, tmp_path):
    from nnunet_lmnet.evaluation.target_dataset import load_target
    from nnunet_lmnet.synthetic_dataset import write_synthetic_dataset

    both = write_synthetic_dataset(tmp_path, 991, dim=2, num_train=2, num_test=1, seed=8)
    t = load_target(str(both))  # a full dataset: imagesTs/labelsTs are preferred
    assert t.images_dir.name == "imagesTs" and sorted(t.cases) == ["synth_002"]
    assert sorted(load_target(str(both), split="train").cases) == ["synth_000", "synth_001"]

    t = load_target("988")  # imagesTs empty: falls back to imagesTr/labelsTr and says so
    assert t.images_dir.name == "imagesTr" and sorted(t.cases) == ["synth_000", "synth_001"]
    assert t.split_note == "imagesTr/ + labelsTr/ (the target has no imagesTs/ with labelsTs/)"
    t = load_target("985")
    assert t.images_dir.name == "imagesTs" and t.split_note == "imagesTs/ + labelsTs/"
    from nnunet_lmnet.errors import UserError

    with pytest.raises(UserError, match="no imagesTs/ \\+ labelsTs/"):
        load_target("988", split="test")
    with pytest.raises(UserError, match="no imagesTr/ \\+ labelsTr/"):
        load_target("985", split="train")  # no training images


def test_compatibility_notes(zs_env, tmp_path):
    from nnunet_lmnet.evaluation.cross_evaluate import (CrossEvaluateOptions, check_models_against_target,
                                                        load_source_model)
    from nnunet_lmnet.evaluation.target_dataset import load_target

    t = shutil.copytree(zs_env["raw"] / "Dataset985_Synthetic2D", tmp_path / "Dataset990_Renamed")
    dj = json.loads((t / "dataset.json").read_text())
    dj.update(labels={"background": 0, "lesion": 1}, channel_names={"0": "ultrasound"})
    (t / "dataset.json").write_text(json.dumps(dj))
    opts = CrossEvaluateOptions(dataset="980", configuration="2d", trainers=[TRAINER], target=str(t), folds=[0])
    model = load_source_model(zs_env["results"], zs_env["source"], TRAINER, opts)
    notes = check_models_against_target([model], load_target(str(t)), zs_env["source"], "2d")
    assert any("1: 'lesion' in the target, 'disc' in the source" in n for n in notes)
    assert any("Source label value(s) [2] are not labelled in the target" in n for n in notes)
    assert any(n.startswith("Channel names differ") for n in notes)
