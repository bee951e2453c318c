"""`nnunet-lmnet compare` on fabricated fold folders with known numbers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from nnunet_lmnet.cli import main
from test_compare_support import DATASET, dataset_json, setup_env, write_bn_checkpoint, write_summary

nan = float("nan")
CASES = [f"case_{i:03d}" for i in range(10)]
REF = {1: [0.80, 0.82, 0.84, 0.86, 0.88, 0.70, 0.72, 0.74, 0.76, 0.78],
       2: [0.50, 0.60, nan, 0.00, 0.70, 0.55, 0.65, 0.45, 0.35, 0.25]}
LM = {1: [r + d for r, d in zip(REF[1], [0.02, 0.03, -0.01, 0.04, 0.05, 0.06, 0.011, 0.07, 0.08, 0.09])],
      2: [0.52, 0.61, nan, nan, 0.72, 0.50, 0.70, 0.40, 0.45, 0.30]}
LG = {1: [r + 0.01 * (i + 1) for i, r in enumerate(REF[1])], 2: list(REF[2])}
FOLD_CASES = {0: range(0, 5), 1: range(5, 10)}


def _write_trainer(results, trainer, values, folds, ckpt_channels=None):
    folder = results / DATASET / f"{trainer}__nnUNetPlans__2d"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(__import__("json").dumps(dataset_json()))
    for k in folds:
        cases = {CASES[i]: {1: values[1][i], 2: values[2][i]} for i in FOLD_CASES[k]}
        write_summary(folder / f"fold_{k}" / "validation" / "summary.json", cases)
    params = None
    if ckpt_channels:
        params = write_bn_checkpoint(folder / f"fold_{folds[0]}" / "checkpoint_final.pth", ckpt_channels, trainer)
    return folder, params


@pytest.fixture
def fabricated(tmp_path, monkeypatch):
    roots = setup_env(monkeypatch, tmp_path)
    res = roots["nnUNet_results"]
    _, p_ref = _write_trainer(res, "nnUNetTrainer", REF, [0, 1], ckpt_channels=4)
    _, p_lm = _write_trainer(res, "nnUNetTrainerLMNet", LM, [0, 1], ckpt_channels=8)
    _write_trainer(res, "nnUNetTrainerLGMSNet", LG, [0])  # fold 1 missing, no checkpoint
    return {"results": res, "params": {"nnUNetTrainer": p_ref, "nnUNetTrainerLMNet": p_lm}, "tmp": tmp_path}


def _case_means(values):
    return np.array([np.nanmean([values[1][i], values[2][i]]) for i in range(10)])


def _fold_values(values, label):
    return [float(np.nanmean([values[label][i] for i in FOLD_CASES[k]])) for k in (0, 1)]


def test_compare_tables_and_tests(fabricated, capsys):
    out = fabricated["tmp"] / "cmp"
    code = main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer", "nnUNetTrainerLMNet",
                 "nnUNetTrainerLGMSNet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for f in ("comparison.md", "comparison.csv", "paired_tests.csv", "per_case.csv", "dice_per_case.png"):
        assert (out / f).is_file(), f

    summary = pd.read_csv(out / "comparison.csv", dtype={"class": str})

    def row(trainer, metric, cls):
        r = summary[(summary.trainer == trainer) & (summary.metric == metric) & (summary["class"] == cls)]
        assert len(r) == 1, (trainer, metric, cls)
        return r.iloc[0]

    # Dice of label 1, reference trainer: fold means 0.84 and 0.74 -> 0.79 ± sample std
    r = row("nnUNetTrainer", "Dice", "1")
    assert r["fold_0"] == pytest.approx(0.84) and r["fold_1"] == pytest.approx(0.74)
    assert r["mean"] == pytest.approx(0.79)
    assert r["std"] == pytest.approx(np.std([0.84, 0.74], ddof=1))
    assert r["n_folds"] == 2 and r["missing_folds"] == "2 3 4"
    assert r["class_name"] == "liver" and r["configuration"] == "2d" and r["plans"] == "nnUNetPlans"
    # label 2 has a NaN case in fold 0: nnU-Net's nanmean
    r = row("nnUNetTrainerLMNet", "Dice", "2")
    assert r["mean"] == pytest.approx(np.mean(_fold_values(LM, 2)))
    # foreground mean = mean over classes of the class means, per fold, then over folds
    r = row("nnUNetTrainer", "Dice", "mean")
    fg = [np.mean([_fold_values(REF, 1)[k], _fold_values(REF, 2)[k]]) for k in (0, 1)]
    assert r["mean"] == pytest.approx(np.mean(fg)) and r["std"] == pytest.approx(np.std(fg, ddof=1))
    # IoU: the fabricated IoU is Dice/(2-Dice) per case
    r = row("nnUNetTrainer", "IoU", "1")
    assert r["fold_0"] == pytest.approx(np.mean([d / (2 - d) for d in REF[1][:5]]))
    # one finished fold: no std, missing folds listed
    r = row("nnUNetTrainerLGMSNet", "Dice", "1")
    assert r["n_folds"] == 1 and math.isnan(r["std"]) and r["missing_folds"] == "1 2 3 4"
    assert r["mean"] == pytest.approx(np.mean(LG[1][:5]))
    # parameters from the checkpoints, BatchNorm running stats excluded
    assert row("nnUNetTrainer", "Dice", "1")["params"] == fabricated["params"]["nnUNetTrainer"] == 48
    assert row("nnUNetTrainerLMNet", "Dice", "1")["params"] == 96
    assert math.isnan(row("nnUNetTrainerLGMSNet", "Dice", "1")["params"])

    paired = pd.read_csv(out / "paired_tests.csv", dtype={"class": str})

    def prow(trainer, metric, cls):
        r = paired[(paired.trainer == trainer) & (paired.metric == metric) & (paired["class"] == cls)]
        assert len(r) == 1
        return r.iloc[0]

    # per-case mean foreground Dice, all 10 cases paired
    a, b = _case_means(LM), _case_means(REF)
    expected = wilcoxon(a, b)
    p = prow("nnUNetTrainerLMNet", "Dice", "mean")
    assert p["n"] == 10 and p["n_excluded"] == 0
    assert p["statistic"] == pytest.approx(expected.statistic)
    assert p["p_value"] == pytest.approx(expected.pvalue)
    assert p["median_diff"] == pytest.approx(np.median(a - b))
    # label 2: case_002 is NaN for both, case_003 NaN for LMNet only -> 2 pairs excluded
    p = prow("nnUNetTrainerLMNet", "Dice", "2")
    keep = [i for i in range(10) if i not in (2, 3)]
    expected = wilcoxon(np.array(LM[2])[keep], np.array(REF[2])[keep])
    assert p["n"] == 8 and p["n_excluded"] == 2
    assert p["statistic"] == pytest.approx(expected.statistic) and p["p_value"] == pytest.approx(expected.pvalue)
    # label 1: one negative difference (-0.01), the smallest |d| -> W = 1; exact two-sided p = 2 * 2 / 2**10
    p = prow("nnUNetTrainerLMNet", "Dice", "1")
    assert p["statistic"] == 1 and p["p_value"] == pytest.approx(4 / 2 ** 10)
    # LGMSNet only has fold 0: five cases paired
    p = prow("nnUNetTrainerLGMSNet", "Dice", "1")
    assert p["n"] == 5 and p["p_value"] == pytest.approx(2 / 2 ** 5)
    assert "nnUNetTrainer" not in set(paired.trainer)  # the reference is not tested against itself

    per_case = pd.read_csv(out / "per_case.csv", dtype={"class": str})
    assert len(per_case[(per_case.trainer == "nnUNetTrainer") & (per_case["class"] != "mean")]) == 20
    m = per_case[(per_case.trainer == "nnUNetTrainerLMNet") & (per_case["class"] == "mean")
                 & (per_case.case == "case_003")]
    assert m["Dice"].iloc[0] == pytest.approx(LM[1][3])  # NaN class skipped in the case mean

    md = (out / "comparison.md").read_text()
    assert md in printed
    assert "0.7900 ± 0.0707" in md
    assert "| `nnUNetTrainerLGMSNet` | 1/5 (0) | 1, 2, 3, 4 | n/a |" in md
    assert "liver (1)" in md and "tumor (2)" in md
    assert "excluded" in md and "ddof = 1" in md
    assert "![Per-case Dice per trainer](dice_per_case.png)" in md

    from PIL import Image

    with Image.open(out / "dice_per_case.png") as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 400


def test_compare_refuses_existing_output_and_overwrites(fabricated, capsys):
    out = fabricated["tmp"] / "cmp"
    args = ["compare", "-d", DATASET, "-c", "2d", "-tr", "nnUNetTrainer", "nnUNetTrainerLMNet", "--out", str(out),
            "--no-plot"]
    assert main(args) == 0
    before = (out / "comparison.csv").read_text()
    (out / "notes.txt").write_text("mine")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert main(args + ["--overwrite"]) == 0
    assert (out / "comparison.csv").read_text() == before
    assert (out / "notes.txt").read_text() == "mine"  # other files in the folder are left alone
    assert not (out / "dice_per_case.png").exists()


def test_compare_default_out_dir_and_folds(fabricated):
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainerLMNet", "nnUNetTrainer", "-f", "0",
                 "--no-plot"]) == 0
    out = fabricated["results"] / DATASET / "comparison_2d"
    summary = pd.read_csv(out / "comparison.csv", dtype={"class": str})
    assert set(summary["n_folds"]) == {1} and summary["missing_folds"].isna().all()
    paired = pd.read_csv(out / "paired_tests.csv", dtype={"class": str})
    assert set(paired.trainer) == {"nnUNetTrainer"} and set(paired.reference) == {"nnUNetTrainerLMNet"}
    p = paired[(paired.metric == "Dice") & (paired["class"] == "mean")].iloc[0]
    assert p["n"] == 5


def test_compare_errors(fabricated, capsys):
    res = fabricated["results"]
    (res / DATASET / "nnUNetTrainerEmpty__nnUNetPlans__2d" / "fold_0").mkdir(parents=True)
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer", "nnUNetTrainerEmpty"]) == 2
    err = capsys.readouterr().err
    assert "nnUNetTrainerEmpty__nnUNetPlans__2d" in err and "no finished fold" in err

    assert main(["compare", "-d", "42", "-c", "3d_fullres", "-tr", "nnUNetTrainer"]) == 2
    err = capsys.readouterr().err
    assert "nnUNetTrainer__nnUNetPlans__3d_fullres" in err and "does not exist" in err
    assert "nnUNetTrainer__nnUNetPlans__2d" in err  # lists the model folders that do exist

    assert main(["compare", "-d", "43", "-c", "2d", "-tr", "nnUNetTrainer"]) == 2
    assert "cannot resolve dataset '43'" in capsys.readouterr().err

    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer", "nnUNetTrainer"]) == 2
    assert "twice" in capsys.readouterr().err

    bad = res / DATASET / "nnUNetTrainer__nnUNetPlans__2d" / "fold_1" / "validation" / "summary.json"
    bad.write_text("{not json")
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer"]) == 2
    assert "fold_1" in capsys.readouterr().err


def test_compare_requires_results_env(monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_results", raising=False)
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer"]) == 2
    assert "nnUNet_results is not set" in capsys.readouterr().err


def test_paired_wilcoxon_known_values():
    from nnunet_lmnet.evaluation.stats import mean_std, paired_wilcoxon

    ref = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.7, nan])
    other = ref + np.array([0.1, 0.2, -0.05, 0.3, 0.4, 0.0, 0.1])
    res = paired_wilcoxon(other, ref)
    # |d| ranks of the non-zero differences: 0.05 -> 1, 0.1 -> 2, 0.2 -> 3, 0.3 -> 4, 0.4 -> 5: W- = 1, W+ = 14
    assert res["n"] == 6 and res["n_excluded"] == 1
    assert res["statistic"] == 1
    assert res["p_value"] == pytest.approx(2 * 2 / 2 ** 5)  # exact: P(W <= 1) = 2/32, two-sided
    assert res["median_diff"] == pytest.approx(0.15)
    same = paired_wilcoxon(ref, ref)
    assert math.isnan(same["p_value"]) and same["note"] == "all differences are zero"
    assert paired_wilcoxon(np.array([nan]), np.array([0.3]))["n"] == 0
    m, s, n = mean_std([0.84, 0.74, nan])
    assert (round(m, 6), round(s, 6), n) == (0.79, round(float(np.std([0.84, 0.74], ddof=1)), 6), 2)
