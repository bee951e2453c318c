"""nnU-Net's lifecycle with our trainers, through the real nnUNetv2_* commands (CPU, tiny data, short trainers).

- ``--c`` after a training killed with SIGKILL after its first checkpoint: same epoch, same schedule; ``--val`` after.
- ``3d_lowres`` then ``3d_cascade_fullres``: training (next-stage export), prediction with a stage-1 segmentation.
- ``--val --npz`` rerun, ``find_best_configuration``, ``nnUNetv2_ensemble`` and ``nnUNetv2_apply_postprocessing``
  across nnUNetTrainer, LM-Net and LGMSNet, on a copy of the 2D demo model.
- The plans route with no ``nnUNet_extTrainer`` at all: the stock nnUNetTrainer trains and predicts LM-Net.
- Multi-process DDP (gloo, 2 CPU processes) as nnU-Net wraps the network: ranks stay equal.

Shared fixtures are only read or get new folders; a test that must rewrite a model works on a copy.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ddp_worker
from nnunet_env import E2E_TRAINERS, nnunet_test_env
from nnunet_lmnet.errors import UserError
from nnunet_lmnet.nnunet_commands import run

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).parent
NETWORK_CLASSES = {"lmnet": "nnunet_lmnet.architectures.lmnet.LMNet",
                   "lgmsnet": "nnunet_lmnet.architectures.lgmsnet.LGMSNet"}
TRAIN_ENV = {"nnUNet_n_proc_DA": "0"}
PREDICT = ("-device", "cpu", "-npp", "0", "-nps", "0")


def _results(env, dataset: str) -> Path:
    return next(Path(env["nnUNet_results"]).glob(dataset))


def _model_folder(env, dataset, trainer, cfg, plans="nnUNetPlans") -> Path:
    return _results(env, dataset) / f"{trainer}__{plans}__{cfg}"


def _check_model(model: Path, arch: str, trainer: str, cfg: str, fold: str = "0", validated: bool = True) -> dict:
    """Our network class in the saved plans, the trainer in the checkpoint, a validation summary."""
    plans = json.loads((model / "plans.json").read_text())
    assert plans["configurations"][cfg]["architecture"]["network_class_name"] == NETWORK_CLASSES[arch]
    ckpt = torch.load(model / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == trainer
    assert (model / f"fold_{fold}" / "validation" / "summary.json").is_file() == validated
    return ckpt


def _without_ext_trainer(env: dict) -> dict:
    """No nnUNet_extTrainer at all, and the installed .pth told not to add ours."""
    out = {k: v for k, v in env.items() if k != "nnUNet_extTrainer"}
    out["NNUNET_LMNET_NO_AUTODISCOVERY"] = "1"
    return out


def _copy_nnunet_tree(src_env: dict, dst_root: Path, dataset: str, model_folders: tuple[str, ...] = ()) -> dict:
    """Copy one dataset's raw and preprocessed folders (and the named result folders) under `dst_root`."""
    env = nnunet_test_env(dst_root)
    for key in ("nnUNet_raw", "nnUNet_preprocessed"):
        src = next(Path(src_env[key]).glob(dataset))
        shutil.copytree(src, Path(env[key]) / src.name)
    for name in model_folders:
        results = _results(src_env, dataset)
        shutil.copytree(results / name, Path(env["nnUNet_results"]) / results.name / name)
    return env


def _read_seg(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path))


# ------------------------------------------------------------------------------------------------ --c after a kill

RESUME_TRAINER = "nnUNetTrainerLMNet_AdamWCosine_resume_test"  # 3 epochs x 1 iteration, checkpoint every epoch
# read by the test trainers (tests/ext_trainers/nnunet_lmnet_test_trainers.py)
KILL_AFTER_EPOCHS = "NNUNET_LMNET_TEST_KILL_AFTER_EPOCHS"
SKIP_FINAL_VALIDATION = "NNUNET_LMNET_TEST_SKIP_FINAL_VALIDATION"


def test_continue_after_a_kill_resumes_at_the_next_epoch_on_the_same_schedule(demo_2d):
    _, env, _ = demo_2d
    train = ("nnUNetv2_train", "980", "2d", "0", "-tr", RESUME_TRAINER, "-device", "cpu")
    with pytest.raises(UserError, match="exit code -9"):  # SIGKILL after epoch 0's checkpoint
        run(*train, env={**env, **TRAIN_ENV, KILL_AFTER_EPOCHS: "1"}, quiet=True)
    fold = _model_folder(env, "Dataset980_*", RESUME_TRAINER, "2d") / "fold_0"
    assert not (fold / "checkpoint_final.pth").exists()
    latest = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert latest["current_epoch"] == 1

    # the --val below validates the resumed model (skipping the one after training saves ~10-20 s of worker start)
    run(*train, "--c", env={**env, **TRAIN_ENV, SKIP_FINAL_VALIDATION: "1"}, quiet=True)
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3
    # the resumed run logged only epochs 1 and 2; the killed one epoch 0
    logs = sorted(fold.glob("training_log_*.txt"))
    epochs = [[int(e) for e in re.findall(r": Epoch (\d+)\s*$", p.read_text(), re.M)] for p in logs]
    assert epochs == [[0], [1, 2]]
    # LM-Net's cosine over the 3 epochs, continued where it stopped (a restarted schedule repeats 1e-3)
    expected = [0.5e-3 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    assert final["logging"]["lrs"] == pytest.approx(expected, rel=1e-9)
    # AdamW's state came back from the checkpoint: 3 steps in all, not 2
    assert {float(s["step"]) for s in final["optimizer_state"]["state"].values()} == {3.0}

    assert not (fold / "validation").exists()
    run(*train, "--val", env={**env, **TRAIN_ENV}, quiet=True)
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == 2 and "Dice" in summary["foreground_mean"]


# ------------------------------------------------------------------------------------ 3d_lowres + 3d_cascade_fullres

CASCADE_PLANS = "nnUNetPlans_cascade"
CASCADE_TRAINER = "nnUNetTrainerLMNet_NoMirroring_test"  # both stages: nnU-Net finds stage 1's output by trainer


def _write_cascade_plans(env: dict, dataset_id: int) -> dict:
    """The dataset's plans plus a 3d_lowres stage at half the in-plane resolution and 3d_cascade_fullres.

    nnU-Net adds 3d_lowres only when the fullres patch covers < 25 % of the median image, which no test-sized dataset
    does at the default GPU target (a 0.01 GB target makes one, with patches of ~3000 voxels and slow sliding-window
    validations). So the spacing is chosen here and the configuration is nnU-Net's own planning at that spacing
    (``get_plans_for_configuration``, as ``plan_experiment`` calls it); the links are written as the planner writes
    them. 3d_fullres keeps its data_identifier: the fixture's preprocessed data is reused.
    """
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )

    planner = ExperimentPlanner(dataset_id, plans_name=CASCADE_PLANS)
    folder = Path(env["nnUNet_preprocessed"]) / planner.dataset_name
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    full = plans["configurations"]["3d_fullres"]
    spacing = [full["spacing"][0]] + [2 * s for s in full["spacing"][1:]]
    median = [round(m * s / t) for m, s, t in zip(full["median_image_size_in_voxels"], full["spacing"], spacing)]
    lowres = planner.get_plans_for_configuration(spacing, median, planner.generate_data_identifier("3d_lowres"),
                                                 float(np.prod(median)) * planner.dataset_json["numTraining"], {})
    lowres.update(batch_dice=False, next_stage="3d_cascade_fullres")
    plans["configurations"].update({"3d_lowres": lowres, "3d_cascade_fullres": {
        "inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}})
    plans["plans_name"] = CASCADE_PLANS
    planner.save_plans(plans)  # nnU-Net's JSON fix-ups
    return json.loads((folder / f"{CASCADE_PLANS}.json").read_text())


def test_3d_lowres_then_cascade_fullres_train_and_predict(preprocessed_3d, tmp_path, monkeypatch):
    import SimpleITK as sitk
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    _, fixture_env = preprocessed_3d
    env = _copy_nnunet_tree(fixture_env, tmp_path, "Dataset981_*")
    for k, v in env.items():
        if k.startswith("nnUNet_"):
            monkeypatch.setenv(k, v)
    plans = _write_cascade_plans(env, 981)
    low = plans["configurations"]["3d_lowres"]
    assert np.prod(low["patch_size"]) < np.prod(plans["configurations"]["3d_fullres"]["patch_size"])
    run("nnUNetv2_preprocess", "-d", "981", "-plans_name", CASCADE_PLANS, "-c", "3d_lowres", "-np", "1", env=env,
        quiet=True)

    common = ("-tr", CASCADE_TRAINER, "-p", CASCADE_PLANS, "-device", "cpu")
    run("nnUNetv2_train", "981", "3d_lowres", "all", *common, env={**env, **TRAIN_ENV}, quiet=True)
    lowres_model = _model_folder(env, "Dataset981_*", CASCADE_TRAINER, "3d_lowres", CASCADE_PLANS)
    _check_model(lowres_model, "lmnet", CASCADE_TRAINER, "3d_lowres", fold="all")
    saved = json.loads((lowres_model / "plans.json").read_text())["configurations"]["3d_lowres"]
    assert saved["architecture"]["arch_kwargs"]["strides"] == low["architecture"]["arch_kwargs"]["strides"][:5]
    # the lowres validation exported every training case for the next stage
    next_stage = sorted(p.stem for p in (lowres_model / "predicted_next_stage" / "3d_cascade_fullres").iterdir())
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in (tmp_path / "nnUNet_raw").glob("*/imagesTr/*.nii.gz"))
    assert next_stage == cases

    # (its own validation is skipped: the prediction below runs the same cascaded inference)
    run("nnUNetv2_train", "981", "3d_cascade_fullres", "all", *common,
        env={**env, **TRAIN_ENV, SKIP_FINAL_VALIDATION: "1"}, quiet=True)
    cascade_model = _model_folder(env, "Dataset981_*", CASCADE_TRAINER, "3d_cascade_fullres", CASCADE_PLANS)
    ckpt = _check_model(cascade_model, "lmnet", CASCADE_TRAINER, "3d_fullres", fold="all", validated=False)
    cascade = PlansManager(str(cascade_model / "plans.json")).get_configuration("3d_cascade_fullres")
    assert cascade.network_arch_class_name == NETWORK_CLASSES["lmnet"] and cascade.previous_stage_name == "3d_lowres"
    # the cascade's network reads the image plus the one-hot lowres segmentation (2 foreground labels)
    assert ckpt["network_weights"]["encoder_stages.0.0.expand.0.weight"].shape[1] == 1 + 2

    # Stage 2 on a new input: any stage-1 segmentation of the same case works as -prev_stage_predictions; the
    # lowres validation (fold all) holds one for every training case, so no separate lowres prediction is run.
    raw = next((tmp_path / "nnUNet_raw").glob("Dataset981_*"))
    image = raw / "imagesTr" / "synth_000_0000.nii.gz"
    (tmp_path / "input").mkdir()
    shutil.copy(image, tmp_path / "input")
    run("nnUNetv2_predict", "-i", tmp_path / "input", "-o", tmp_path / "pred_cascade", "-d", "981", "-c",
        "3d_cascade_fullres", "-f", "all", *common[:4], *PREDICT, "-prev_stage_predictions",
        lowres_model / "fold_all" / "validation", env=env, quiet=True)
    ref, pred = (sitk.ReadImage(str(p)) for p in (image, tmp_path / "pred_cascade" / "synth_000.nii.gz"))
    assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == pytest.approx(ref.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}


# ------------------------------------------- --val, find_best_configuration, ensembling, postprocessing (2D, x3)

THREE = {arch: E2E_TRAINERS[arch] for arch in ("default", "lmnet", "lgmsnet")}


@pytest.fixture(scope="module")
def three_trainers(demo_2d, tmp_path_factory):
    """A copy of the demo's dataset and LM-Net model; there `--val --npz` reruns LM-Net's validation and the stock
    and LGMSNet test trainers train fold 0 with --npz. Returns (root, env, summary mtime before the rerun)."""
    root, demo_env, _ = demo_2d
    copy = tmp_path_factory.mktemp("three_trainers")
    lmnet_folder = f"{THREE['lmnet']}__nnUNetPlans__2d"
    env = _copy_nnunet_tree(demo_env, copy, "Dataset980_*", (lmnet_folder,))
    summary = _model_folder(env, "Dataset980_*", THREE["lmnet"], "2d") / "fold_0" / "validation" / "summary.json"
    before = summary.stat().st_mtime_ns
    train_env = {**env, **TRAIN_ENV}
    run("nnUNetv2_train", "980", "2d", "0", "-tr", THREE["lmnet"], "--val", "--npz", "-device", "cpu",
        env=train_env, quiet=True)
    for arch in ("default", "lgmsnet"):
        run("nnUNetv2_train", "980", "2d", "0", "-tr", THREE[arch], "--npz", "-device", "cpu", env=train_env,
            quiet=True)
    return copy, env, before


def test_validation_rerun_writes_new_results(three_trainers):
    _, env, before = three_trainers
    validation = _model_folder(env, "Dataset980_*", THREE["lmnet"], "2d") / "fold_0" / "validation"
    summary = validation / "summary.json"
    assert summary.stat().st_mtime_ns != before  # rewritten by the rerun
    cases = sorted(Path(c["prediction_file"]).name for c in json.loads(summary.read_text())["metric_per_case"])
    assert len(cases) == 2
    # the demo's training validated without --npz: these files exist only if the rerun wrote them
    for case in cases:
        stem = case[:-len(".png")]
        assert (validation / f"{stem}.npz").is_file() and (validation / f"{stem}.pkl").is_file()
        assert (validation / case).stat().st_mtime_ns > before


def test_lgmsnet_trains_and_predicts_the_demo_dataset(three_trainers):
    """What the separate LGMSNet demo run used to check, on the shared demo dataset."""
    root, env, _ = three_trainers
    model = _model_folder(env, "Dataset980_*", THREE["lgmsnet"], "2d")
    _check_model(model, "lgmsnet", THREE["lgmsnet"], "2d")
    summary = json.loads((model / "fold_0" / "validation" / "summary.json").read_text())
    assert "Dice" in summary["foreground_mean"]
    raw = next((root / "nnUNet_raw").glob("Dataset980_*"))
    out = root / "pred_lgmsnet"
    run("nnUNetv2_predict", "-i", raw / "imagesTs", "-o", out, "-d", "980", "-c", "2d", "-f", "0", "-tr",
        THREE["lgmsnet"], *PREDICT, env=env, quiet=True)
    preds = sorted(p.name for p in out.glob("*.png"))
    assert preds == ["synth_010.png", "synth_011.png"]
    for p in preds:
        seg = _read_seg(out / p)
        assert seg.shape == (64, 64) and set(np.unique(seg)) <= {0, 1, 2}


def test_find_best_ensemble_and_postprocessing_across_three_trainers(three_trainers):
    """find_best_configuration over the three, nnUNetv2_ensemble of the three validations and
    nnUNetv2_apply_postprocessing with the postprocessing find_best chose: all from the result folders alone, so with
    no nnUNet_extTrainer. (find_best's own pairwise ensembles are disabled: they average the same .npz files as
    nnUNetv2_ensemble, at ~10 s of worker start-up per pair.)"""
    root, env, _ = three_trainers
    bare = _without_ext_trainer(env)
    run("nnUNetv2_find_best_configuration", "980", "-c", "2d", "-tr", *THREE.values(), "-f", "0", "-np", "1",
        "--disable_ensembling", env=bare, quiet=True)
    results = _results(env, "Dataset980_*")
    info = json.loads((results / "inference_information.json").read_text())
    models = {f"{t}__nnUNetPlans__2d" for t in THREE.values()}
    assert set(info["all_results"]) == models
    assert {m["trainer"] for m in info["best_model_or_ensemble"]["selected_model_or_models"]} <= set(THREE.values())

    folders = [_model_folder(env, "Dataset980_*", t, "2d") / "fold_0" / "validation" for t in THREE.values()]
    ensembled = root / "ensemble_of_three"
    # nnUNetv2_ensemble reads plans.json and dataset.json from its first input folder (nnUNetv2_predict writes
    # them next to its predictions; a validation folder has them one level up)
    inputs = root / "ensemble_inputs"
    for folder in folders:
        target = inputs / folder.parent.parent.name
        shutil.copytree(folder, target)
        for name in ("plans.json", "dataset.json"):
            shutil.copy(folder.parent.parent / name, target / name)
    run("nnUNetv2_ensemble", "-i", *sorted(inputs.iterdir()), "-o", ensembled, "-np", "1", env=bare, quiet=True)
    cases = sorted(p.stem for p in folders[0].glob("*.npz"))
    assert sorted(p.stem for p in ensembled.glob("*.png")) == cases
    for case in cases:  # the ensemble is the argmax of the mean of the three models' probabilities
        mean = sum(np.load(f / f"{case}.npz")["probabilities"] for f in folders) / 3
        np.testing.assert_array_equal(_read_seg(ensembled / f"{case}.png"), mean.argmax(0)[0])

    pp = info["best_model_or_ensemble"]
    out = root / "ensemble_postprocessed"
    run("nnUNetv2_apply_postprocessing", "-i", ensembled, "-o", out, "-pp_pkl_file", pp["postprocessing_file"],
        "-plans_json", pp["some_plans_file"], "-np", "1", env=bare, quiet=True)
    for case in cases:  # postprocessing only ever removes foreground
        before, after = _read_seg(ensembled / f"{case}.png"), _read_seg(out / f"{case}.png")
        assert after.shape == before.shape and np.all((after == before) | (after == 0))


# ------------------------------------------------------------------------- the plans route, no nnUNet_extTrainer

def test_plans_route_needs_no_ext_trainer(demo_2d, tmp_path, monkeypatch):
    """README: derive-plans, then the stock trainer trains and predicts our network with no nnUNet_extTrainer.

    nnU-Net's stock trainers all run >= 250 iterations, so tests/stock_trainer_short.py runs nnUNetv2_train's entry
    point with the stock class shortened in its own process (the checkpoint still names nnUNetTrainer); the
    prediction is the plain nnUNetv2_predict command."""
    from nnunet_lmnet.cli import main

    root, env, _ = demo_2d
    for k, v in env.items():
        if k.startswith("nnUNet_"):
            monkeypatch.setenv(k, v)
    assert main(["derive-plans", "-d", "980", "--arch", "lmnet"]) == 0
    assert main(["derive-plans", "-d", "980", "--arch", "lmnet"]) == 2  # exists, no --overwrite
    bare = _without_ext_trainer(env)
    subprocess.run([sys.executable, str(TESTS / "stock_trainer_short.py"), "980", "2d", "0", "-p",
                    "nnUNetPlans_LMNet", "-device", "cpu"], env={**bare, **TRAIN_ENV}, check=True,
                   stdout=subprocess.DEVNULL)
    stock = _model_folder(env, "Dataset980_*", "nnUNetTrainer", "2d", plans="nnUNetPlans_LMNet")
    ours = _model_folder(env, "Dataset980_*", E2E_TRAINERS["lmnet"], "2d")
    a = _check_model(stock, "lmnet", "nnUNetTrainer", "2d")["network_weights"]
    b = torch.load(ours / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)[
        "network_weights"]
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}

    raw = next((root / "nnUNet_raw").glob("Dataset980_*"))
    run("nnUNetv2_predict", "-i", raw / "imagesTs", "-o", tmp_path, "-d", "980", "-c", "2d", "-f", "0", "-p",
        "nnUNetPlans_LMNet", *PREDICT, env=bare, quiet=True)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["synth_010.png", "synth_011.png"]


# ----------------------------------------------------------------------------- DDP, 2 CPU processes (gloo)

@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("ddp")
    out = folder / "results.json"
    mp.spawn(ddp_worker.run, args=(2, str(folder / "rendezvous"), str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", list(ddp_worker.CASES))
def test_ddp_ranks_stay_equal(ddp_results, case):
    """DDP without find_unused_parameters (as nnU-Net wraps), recomputation on, nnU-Net's DS loss with ddp=True:
    3 SGD steps on different data per rank. SyncBatchNorm (nnU-Net converts to it) needs CUDA: not run here."""
    r = ddp_results[case]
    assert r["recompute"] and r["num_outputs"] >= 3
    assert r["without_grad"] == []
    assert r["losses"][0] != r["losses"][1]  # the ranks did see different data
    assert r["max_change"] > 0  # the steps changed the weights
    assert r["max_rank_difference"] == 0.0  # ... identically on both ranks
