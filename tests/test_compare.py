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
    _write_trainer(res, "nnUNetTrainerLGMSNet", LG, [0, 1])  # no checkpoint
    _write_trainer(res, "nnUNetTrainerOneFold", LG, [0])  # fold 1 missing
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
    r = row("nnUNetTrainerLGMSNet", "Dice", "1")
    assert r["n_folds"] == 2 and r["missing_folds"] == "2 3 4" and pd.isna(r["left_out_folds"])
    assert r["mean"] == pytest.approx(np.mean(_fold_values(LG, 1)))
    # the count metrics from the fixed TP=5, FP=1, FN=1, TN=100 of write_summary
    assert row("nnUNetTrainer", "Precision", "1")["fold_0"] == pytest.approx(5 / 6)
    assert row("nnUNetTrainer", "Recall", "mean")["mean"] == pytest.approx(5 / 6)
    assert row("nnUNetTrainer", "Accuracy", "2")["fold_1"] == pytest.approx(105 / 107)
    assert row("nnUNetTrainer", "RAD", "mean")["mean"] == pytest.approx(0.0)
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
    # LGMSNet: all ten differences positive, exact p = 2 / 2**10
    p_lg = prow("nnUNetTrainerLGMSNet", "Dice", "1")
    assert p_lg["n"] == 10 and p_lg["p_value"] == pytest.approx(2 / 2 ** 10)
    # Holm over the two trainers (per metric and class): 2/1024 * 2 = 4/1024; then max(4/1024, 4/1024 * 1)
    # (Bonferroni would give LMNet 8/1024, no correction LGMSNet 2/1024)
    assert p_lg["p_holm"] == pytest.approx(4 / 2 ** 10)
    assert prow("nnUNetTrainerLMNet", "Dice", "1")["p_holm"] == pytest.approx(4 / 2 ** 10)
    # bootstrap CI of the mean difference: all LGMSNet differences lie in [0.01, 0.10], mean 0.055
    assert 0.01 < p_lg["ci_low"] < 0.055 < p_lg["ci_high"] < 0.10
    assert p_lg["within_spread"] == False  # noqa: E712 (read back from CSV as a bool)
    assert math.isnan(prow("nnUNetTrainerLGMSNet", "IoU", "1")["within_spread"])  # the flag is for Dice only
    assert prow("nnUNetTrainerLMNet", "RAD", "1")["mean_diff"] == pytest.approx(0.0)
    assert "nnUNetTrainer" not in set(paired.trainer)  # the reference is not tested against itself

    per_case = pd.read_csv(out / "per_case.csv", dtype={"class": str})
    assert len(per_case[(per_case.trainer == "nnUNetTrainer") & (per_case["class"] != "mean")]) == 20
    m = per_case[(per_case.trainer == "nnUNetTrainerLMNet") & (per_case["class"] == "mean")
                 & (per_case.case == "case_003")]
    assert m["Dice"].iloc[0] == pytest.approx(LM[1][3])  # NaN class skipped in the case mean

    md = (out / "comparison.md").read_text()
    assert md in printed
    assert "0.7900 ± 0.0707" in md
    assert "| `nnUNetTrainerLGMSNet` | 2/5 (0, 1) | 2, 3, 4 | n/a |" in md
    assert "the same folds (0, 1) and the same 10 validation cases; nothing was left out" in md
    assert "## Verdict: mean Dice against `nnUNetTrainer`" in md and "Holm-adjusted p" in md
    assert "## Precision — mean ± std over folds" in md and "## RAD (relative area difference" in md
    assert "10,000 resamples" in md and "default_rng(0)" in md and "nnU-Net issue #2624" in md
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


# ------------------------------------------------------------------------------------------ shared folds and cases
def _csv(out, name):
    return pd.read_csv(out / name, dtype={"class": str, "missing_folds": str, "left_out_folds": str})


def test_compare_mismatched_folds_uses_the_shared_fold(fabricated):
    out = fabricated["tmp"] / "cmp"
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer", "nnUNetTrainerLMNet",
                 "nnUNetTrainerOneFold", "--out", str(out), "--no-plot"]) == 0
    summary = _csv(out, "comparison.csv")
    assert set(summary["n_folds"]) == {1} and "fold_1" not in summary.columns
    ref = summary[(summary.trainer == "nnUNetTrainer") & (summary.metric == "Dice") & (summary["class"] == "1")]
    assert ref["mean"].iloc[0] == pytest.approx(np.mean(REF[1][:5]))  # fold 0 only, not the mean over 2 folds
    assert ref["left_out_folds"].iloc[0] == "1" and ref["missing_folds"].iloc[0] == "2 3 4"
    paired = _csv(out, "paired_tests.csv")
    assert set(paired["n_cases_common"]) == {5}
    per_case = _csv(out, "per_case.csv")
    assert set(per_case["fold"]) == {0} and set(per_case["case"]) == set(CASES[:5])
    md = (out / "comparison.md").read_text()
    assert "**Compared on what every trainer has: fold(s) 0, 5 validation cases.** Left out:" in md
    assert "- `nnUNetTrainer`: left out fold(s) 1 (not finished by every trainer)." in md
    assert "- `nnUNetTrainerLMNet`: left out fold(s) 1" in md and "`nnUNetTrainerOneFold`: left out" not in md


def test_compare_mismatched_cases_recomputes_fold_means(fabricated):
    res = fabricated["results"]
    folder = res / DATASET / "nnUNetTrainerFewer__nnUNetPlans__2d"
    folder.mkdir()
    (folder / "dataset.json").write_text(__import__("json").dumps(dataset_json()))
    write_summary(folder / "fold_0" / "validation" / "summary.json",
                  {CASES[i]: {1: LM[1][i], 2: LM[2][i]} for i in range(4)})  # case_004 missing
    write_summary(folder / "fold_1" / "validation" / "summary.json",
                  {**{CASES[i]: {1: LM[1][i], 2: LM[2][i]} for i in range(5, 10)}, "case_extra": {1: 0.1, 2: 0.1}})
    out = fabricated["tmp"] / "cmp"
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer", "nnUNetTrainerFewer", "-f", "0", "1",
                 "--out", str(out), "--no-plot"]) == 0
    summary = _csv(out, "comparison.csv")
    r = summary[(summary.trainer == "nnUNetTrainer") & (summary.metric == "Dice") & (summary["class"] == "1")]
    # the reference's fold 0 over the 4 shared cases (0.83), not its summary.json mean over 5 cases (0.84)
    assert r["fold_0"].iloc[0] == pytest.approx(np.mean(REF[1][:4])) and r["left_out_cases"].iloc[0] == 1
    r = summary[(summary.trainer == "nnUNetTrainerFewer") & (summary.metric == "Dice") & (summary["class"] == "1")]
    assert r["fold_1"].iloc[0] == pytest.approx(np.mean(LM[1][5:]))  # case_extra left out
    assert _csv(out, "paired_tests.csv").query("metric == 'Dice' and `class` == '1'")["n"].iloc[0] == 9
    md = (out / "comparison.md").read_text()
    assert "9 validation cases" in md
    assert "- `nnUNetTrainer`: left out 1 case(s) the other trainers lack: case_004 (fold 0)." in md
    assert "- `nnUNetTrainerFewer`: left out 1 case(s) the other trainers lack: case_extra (fold 1)." in md


def test_compare_nothing_shared_is_an_error(fabricated, capsys):
    res = fabricated["results"]
    folder = res / DATASET / "nnUNetTrainerFold1__nnUNetPlans__2d"
    write_summary(folder / "fold_1" / "validation" / "summary.json", {CASES[5]: {1: 0.5, 2: 0.5}})
    out = fabricated["tmp"] / "cmp"
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainerOneFold", "nnUNetTrainerFold1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no finished fold in common" in err
    assert "nnUNetTrainerOneFold: 0" in err and "nnUNetTrainerFold1: 1" in err
    other = res / DATASET / "nnUNetTrainerOtherSplit__nnUNetPlans__2d"
    write_summary(other / "fold_0" / "validation" / "summary.json", {"other_case": {1: 0.5, 2: 0.5}})
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer", "nnUNetTrainerOtherSplit", "-f", "0",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no case in common" in err and "splits_final.json" in err
    assert not out.exists()  # nothing written


def test_compare_single_trainer_says_why_there_are_no_paired_tests(fabricated):
    out = fabricated["tmp"] / "cmp"
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainerLMNet", "--out", str(out),
                 "--no-plot"]) == 0
    md = (out / "comparison.md").read_text()
    assert "Only one trainer was given (`nnUNetTrainerLMNet`), so there is no paired comparison" in md
    assert _csv(out, "paired_tests.csv").empty


# ------------------------------------------------------------------------------------------ count metrics
COUNTS = {  # (TP, FP, FN, TN) per case for label 1; label 2 is perfect in every case
    "case_a": (8, 2, 4, 86),   # precision 0.8, recall 8/12, accuracy 0.94, RAD |10 - 12| / 12
    "case_b": (0, 0, 5, 95),   # prediction empty: precision undefined, recall 0, RAD 1
    "case_c": (0, 3, 0, 97),   # reference empty: recall and RAD undefined, precision 0
    "case_d": (0, 0, 0, 100),  # both empty: everything but accuracy undefined
}


def test_count_metrics_hand_checked(fabricated):
    folder = fabricated["results"] / DATASET / "nnUNetTrainerCounts__nnUNetPlans__2d"
    write_summary(folder / "fold_0" / "validation" / "summary.json", {},
                  counts={c: {1: v, 2: (10, 0, 0, 90)} for c, v in COUNTS.items()})
    # fold 1: label 2 is never predicted, so its precision is undefined in every case
    write_summary(folder / "fold_1" / "validation" / "summary.json", {},
                  counts={"case_e": {1: (8, 2, 4, 86), 2: (0, 0, 5, 95)}})
    (folder / "dataset.json").write_text(__import__("json").dumps(dataset_json()))
    out = fabricated["tmp"] / "cmp"
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainerCounts", "-f", "0", "1", "--out", str(out),
                 "--no-plot"]) == 0
    per_case = _csv(out, "per_case.csv").set_index(["case", "class"])
    assert per_case.loc[("case_a", "1"), "Precision"] == pytest.approx(0.8)
    assert per_case.loc[("case_a", "1"), "Recall"] == pytest.approx(8 / 12)
    assert per_case.loc[("case_a", "1"), "Accuracy"] == pytest.approx(0.94)
    assert per_case.loc[("case_a", "1"), "RAD"] == pytest.approx(2 / 12)
    assert math.isnan(per_case.loc[("case_b", "1"), "Precision"]) and per_case.loc[("case_b", "1"), "RAD"] == 1
    assert per_case.loc[("case_c", "1"), "Precision"] == 0 and math.isnan(per_case.loc[("case_c", "1"), "RAD"])
    assert math.isnan(per_case.loc[("case_d", "1"), "Recall"]) and per_case.loc[("case_d", "1"), "Accuracy"] == 1

    s = _csv(out, "comparison.csv").set_index(["metric", "class"])
    # fold 0, label 1: nanmean over the defined cases
    assert s.loc[("Precision", "1"), "fold_0"] == pytest.approx((0.8 + 0.0) / 2)
    assert s.loc[("Recall", "1"), "fold_0"] == pytest.approx((8 / 12 + 0.0) / 2)
    assert s.loc[("RAD", "1"), "fold_0"] == pytest.approx((2 / 12 + 1.0) / 2)
    assert s.loc[("Accuracy", "1"), "fold_0"] == pytest.approx((0.94 + 0.95 + 0.97 + 1.0) / 4)
    # 'mean' = mean over the class means (label 2: 1, 1, 1 and RAD 0)
    assert s.loc[("Precision", "mean"), "fold_0"] == pytest.approx((0.4 + 1.0) / 2)
    assert s.loc[("RAD", "mean"), "fold_0"] == pytest.approx(((2 / 12 + 1.0) / 2 + 0.0) / 2)
    assert s.loc[("Dice", "1"), "fold_0"] == pytest.approx(16 / 22 / 3)  # 16/22, 0, 0; case_d NaN
    # fold 1: a class undefined in every case makes the fold's 'mean' undefined (nnU-Net's np.mean over classes),
    # and the mean over folds uses the folds where it is defined
    assert s.loc[("Precision", "1"), "fold_1"] == pytest.approx(0.8)
    assert math.isnan(s.loc[("Precision", "mean"), "fold_1"])
    assert s.loc[("Precision", "mean"), "n_folds"] == 1 and s.loc[("Precision", "mean"), "mean"] == pytest.approx(0.7)
    assert s.loc[("Recall", "mean"), "fold_1"] == pytest.approx((8 / 12 + 0.0) / 2)
    md = (out / "comparison.md").read_text()
    assert "## Cases with an empty reference or prediction" in md
    assert "| `nnUNetTrainerCounts` | liver (1) | 1 | 1 | 1 |" in md
    assert "| `nnUNetTrainerCounts` | tumor (2) | 0 | 1 | 0 |" in md  # fold 1


def test_overlap_metric_functions():
    from nnunet_lmnet.evaluation.overlap_metrics import accuracy, precision, recall, relative_area_difference

    tp, fp, fn, tn = (np.array(x, float) for x in zip(*COUNTS.values()))
    np.testing.assert_allclose(precision(tp, fp), [0.8, nan, 0.0, nan])
    np.testing.assert_allclose(recall(tp, fn), [8 / 12, 0.0, nan, nan])
    np.testing.assert_allclose(accuracy(tp, fp, fn, tn), [0.94, 0.95, 0.97, 1.0])
    np.testing.assert_allclose(relative_area_difference(tp, fp, fn), [2 / 12, 1.0, nan, nan])
    # over-segmentation: pred 30, ref 10 -> RAD 2 (can exceed 1)
    assert relative_area_difference(10, 20, 0) == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------ Holm, bootstrap, spread
def test_holm_known_values():
    from nnunet_lmnet.evaluation.multiple_comparisons import holm_adjust

    # sorted 0.01, 0.03, 0.04 with m = 3: 0.03, 0.06, max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(holm_adjust([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm_adjust([0.5, 0.01, nan]), [0.5, 0.02, nan])  # NaN: not in the family
    np.testing.assert_allclose(holm_adjust([0.4, 0.3]), [0.6, 0.6])
    np.testing.assert_allclose(holm_adjust([0.9, 0.8]), [1.0, 1.0])  # capped at 1
    assert holm_adjust([0.02]).tolist() == [0.02]  # one test: unchanged


def test_paired_bootstrap_ci():
    from nnunet_lmnet.evaluation.stats import paired_bootstrap_ci

    # two pairs with differences 0 and 1: resampled means 0, 0.5, 1 with probability 1/4, 1/2, 1/4
    assert paired_bootstrap_ci(np.array([0.5, 1.0]), np.array([0.5, 0.0])) == (0.0, 1.0)
    assert paired_bootstrap_ci(np.array([0.7, 0.8, nan]), np.array([0.6, 0.7, 0.1])) == \
        pytest.approx((0.1, 0.1))  # constant difference; the NaN pair is dropped
    assert all(math.isnan(x) for x in paired_bootstrap_ci(np.array([0.5]), np.array([0.4])))
    rng = np.random.default_rng(5)
    d = rng.normal(0.03, 0.05, 400)
    low, high = paired_bootstrap_ci(d, np.zeros_like(d))
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert low == pytest.approx(d.mean() - 1.96 * se, abs=0.25 * se)
    assert high == pytest.approx(d.mean() + 1.96 * se, abs=0.25 * se)
    assert paired_bootstrap_ci(d, np.zeros_like(d)) == (low, high)  # fixed seed: reproducible


def test_within_spread_rule():
    from nnunet_lmnet.evaluation.paired_tests import within_spread

    assert within_spread("Dice", 0.010, 0.008, 0.012) is True     # CI excludes 0 but |Δ| < 0.018
    assert within_spread("Dice", 0.050, -0.01, 0.11) is True      # large, but the CI contains 0
    assert within_spread("Dice", -0.030, -0.05, -0.02) is False   # large and the CI excludes 0
    assert within_spread("Dice", 0.018, 0.01, 0.03) is False      # 1.8 points exactly is not below
    assert within_spread("Dice", 0.030, nan, nan) is True         # no CI (fewer than 2 pairs)
    assert within_spread("IoU", 0.001, -1, 1) is None             # Dice only


def test_compare_verdict_flags_a_small_difference(fabricated):
    res = fabricated["results"]
    tiny = {k: [v + 0.005 if np.isfinite(v) else v for v in REF[k]] for k in (1, 2)}
    _write_trainer(res, "nnUNetTrainerTiny", tiny, [0, 1])
    out = fabricated["tmp"] / "cmp"
    assert main(["compare", "-d", "42", "-c", "2d", "-tr", "nnUNetTrainer", "nnUNetTrainerTiny",
                 "nnUNetTrainerLGMSNet", "--out", str(out), "--no-plot"]) == 0
    paired = _csv(out, "paired_tests.csv").set_index(["trainer", "metric", "class"])
    tiny_row = paired.loc[("nnUNetTrainerTiny", "Dice", "mean")]
    assert tiny_row["mean_diff"] == pytest.approx(0.005) and tiny_row["ci_low"] == pytest.approx(0.005)
    assert tiny_row["within_spread"] == True  # noqa: E712
    md = (out / "comparison.md").read_text()
    verdict = md.split("## Verdict")[1].split("\n## ")[0]
    assert ("- `nnUNetTrainerTiny`: Δ mean Dice = +0.0050 (95% CI [+0.0050, +0.0050], 10 cases), Holm-adjusted p = "
            in verdict)
    assert "**within nnU-Net's run-to-run spread (nnU-Net #2624)** (|Δ| < 0.018)" in verdict
    lg = [line for line in verdict.splitlines() if "`nnUNetTrainerLGMSNet`" in line][0]
    assert "spread" in lg and "within" not in lg  # +0.0275 mean Dice, CI above 0
