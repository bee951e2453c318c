"""Plans for a memory budget: the activation estimate, ``derive-plans --gpu-memory-target`` (nnU-Net's planner with
our network's estimate) and the trainers' start-of-training memory line.

Most planner tests use stub datasets: a fingerprint and a raw dataset.json without images (the planner reads no
image when dataset.json names the reader), planned by the stock planner at 1 GB. The test on a real fingerprint is in
test_e2e_nnunet.py (it reuses that module's preprocessed dataset).
"""
import contextlib
import copy
import io
import json
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_lmnet.architectures.stage_geometry import total_stride
from nnunet_lmnet.benchmark.saved_activations import saved_bytes_per_sample
from nnunet_lmnet.benchmark.synthetic_plans import default_configuration, nnunet_topology, plans_with
from nnunet_lmnet.cli import main
from nnunet_lmnet.plans import presets
from nnunet_lmnet.plans.budget_planner import BUDGET_KEY, BudgetPlanner, plan_for_budget
from nnunet_lmnet.plans.derive import derive_architecture
from nnunet_lmnet.plans.memory_estimate import measurement_patch, saved_bytes_per_sample_estimate
from nnunet_lmnet.training import memory_check
from nnunet_lmnet.training.trainers import nnUNetTrainerLMNet

ARCHS = ["lmnet", "lgmsnet"]
STUBS = {  # id, median shape, spacing
    "iso": (990, (128, 128, 128), (1.0, 1.0, 1.0)),  # 2d, 3d_fullres, 3d_lowres and 3d_cascade_fullres
    "aniso": (992, (40, 160, 160), (2.5, 0.8, 0.8)),  # 2d, 3d_fullres; a larger patch changes the 5th stride
}
STUB_ID = STUBS["iso"][0]
STUB_CASES, STUB_GB = 3, 1.0  # 3 cases: the 5 % cap binds the stock 2d batch of "iso" (19 < 25)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------------------------- the estimate
def _default_architecture(patch):
    strides, kernels, planned = nnunet_topology(patch)
    assert planned == list(patch)
    return default_configuration(strides, kernels, planned)["architecture"]  # nnU-Net's widths (512 in 2D)


def _architecture(net, planned):
    default = _default_architecture(planned)
    return default if net == "default" else derive_architecture(net, default)


def _measured(architecture, patch, cin=1, classes=3):
    net = get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                 architecture["_kw_requires_import"], cin, classes, allow_init=False,
                                 deep_supervision=True).train()
    return saved_bytes_per_sample(net, torch.randn(2, cin, *patch))


@pytest.mark.parametrize("net", ["default", *ARCHS])
@pytest.mark.parametrize("planned, check", [((256, 256), (256, 256)), ((64, 64, 64), (32, 32, 64))],
                         ids=["2d-256x256", "3d-64x64x64-strides"])
def test_estimate_is_within_20_percent_of_the_measured_saved_bytes(net, planned, check):
    """nnU-Net's strides for the planned patch; 3D checked at a smaller patch (LM-Net 3D at 64^3 is slow on CPU),
    still 8x the voxels the estimate is measured at."""
    architecture = _architecture(net, planned)
    assert math.prod(check) >= 4 * math.prod(measurement_patch(architecture, len(check)))
    estimate = saved_bytes_per_sample_estimate(architecture, 1, 3, check)
    measured = _measured(architecture, check)
    assert abs(estimate - measured) <= 0.2 * measured, (estimate, measured)


def test_estimate_is_measured_and_leaves_the_random_state_alone():
    """Measured, not modelled: wider stages show up. A trainer calls it after seeding: the RNG must not move."""
    architecture = _architecture("lgmsnet", (256, 256))
    wide = copy.deepcopy(architecture)
    wide["arch_kwargs"]["features_per_stage"] = [2 * w for w in wide["arch_kwargs"]["features_per_stage"]]
    state = torch.get_rng_state()
    ratio = (saved_bytes_per_sample_estimate(wide, 1, 3, (256, 256))
             / saved_bytes_per_sample_estimate(architecture, 1, 3, (256, 256)))
    assert torch.equal(state, torch.get_rng_state())
    assert 1.5 < ratio < 2.5


# ------------------------------------------------------------------------------------------------- the planner
def _write_stub_dataset(root: Path, dataset_id: int, shape, spacing, cases: int, fingerprint: bool = True) -> str:
    name = f"Dataset{dataset_id:03d}_Stub"
    raw = root / "nnUNet_raw" / name
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": cases,
        "file_ending": ".nii.gz", "overwrite_image_reader_writer": "SimpleITKIO",
        "dataset": {f"c{i}": {"images": [f"imagesTr/c{i}_0000.nii.gz"], "label": f"labelsTr/c{i}.nii.gz"}
                    for i in range(cases)},
    }))
    pre = root / "nnUNet_preprocessed" / name
    pre.mkdir(parents=True)
    if fingerprint:
        (pre / "dataset_fingerprint.json").write_text(json.dumps({
            "spacings": [list(spacing)] * cases, "shapes_after_crop": [list(shape)] * cases,
            "median_relative_size_after_cropping": 1.0,
            "foreground_intensity_properties_per_channel": {"0": {
                "max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
                "percentile_99_5": 1.0, "std": 1.0}},
        }))
    return name


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """{key: (dataset id, preprocessed folder, source plans)}, nnU-Net's env vars set for the module."""
    root = tmp_path_factory.mktemp("budget")
    with pytest.MonkeyPatch.context() as mp:
        for k in ("raw", "preprocessed", "results"):
            mp.setenv(f"nnUNet_{k}", str(root / f"nnUNet_{k}"))
        out = {}
        for key, (dataset_id, shape, spacing) in STUBS.items():
            name = _write_stub_dataset(root, dataset_id, shape, spacing, STUB_CASES)
            with contextlib.redirect_stdout(io.StringIO()):
                ExperimentPlanner(dataset_id, gpu_memory_target_in_gb=STUB_GB).plan_experiment()
            folder = root / "nnUNet_preprocessed" / name
            out[key] = dataset_id, folder, json.loads((folder / "nnUNetPlans.json").read_text())
        assert set(out["iso"][2]["configurations"]) == {"2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"}
        yield out


@pytest.fixture
def stub(stubs):
    """(preprocessed folder, source plans) of the "iso" stub."""
    return stubs["iso"][1:]


def _derive(*args, dataset: int = STUB_ID) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["derive-plans", "-d", str(dataset), *args])
    return code, err.getvalue()


def _planned(folder: Path, arch: str, gb: float, dataset: int = STUB_ID) -> dict:
    code, err = _derive("--arch", arch, "--gpu-memory-target", f"{gb:g}", "--overwrite", dataset=dataset)
    assert code == 0, err
    return json.loads((folder / f"nnUNetPlans_{presets.DISPLAY_NAMES[arch].replace('-', '')}_{gb:g}G.json")
                      .read_text())


def _steps(plans: dict) -> dict:
    pm = PlansManager(plans)
    return {n: math.prod(pm.get_configuration(n).patch_size) * pm.get_configuration(n).batch_size
            for n in plans["configurations"]}


def test_with_our_network_replaced_by_nnunets_the_planner_reproduces_nnunets_plans(stub, monkeypatch):
    """Ratio 1 = nnU-Net's own estimate: every configuration gets nnU-Net's patch and batch back, so spacing,
    median shape, memory target and the 5 % cap's dataset voxels reach nnU-Net's loop as plan_experiment passes
    them (2d counts the 3D voxels; 3d_lowres its own)."""
    _, source = stub
    planner = BudgetPlanner(STUB_ID, "lmnet", STUB_GB, "nnUNetPlans_check")
    monkeypatch.setattr(BudgetPlanner, "memory_ratio", lambda *a: 1.0)
    plans = plan_for_budget(planner, source)
    for name in ("2d", "3d_fullres", "3d_lowres"):
        got, want = plans["configurations"][name], source["configurations"][name]
        assert (got["patch_size"], got["batch_size"]) == (want["patch_size"], want["batch_size"]), name


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("which", STUBS)
def test_budget_plans_fit_keep_the_data_and_describe_our_network(stubs, which, arch):
    dataset_id, folder, source = stubs[which]
    gb = STUB_GB
    plans = _planned(folder, arch, gb, dataset_id)
    assert plans["plans_name"] == f"nnUNetPlans_{presets.DISPLAY_NAMES[arch].replace('-', '')}_1G"
    if "3d_cascade_fullres" in source["configurations"]:  # still inherits (patch and batch of the new 3d_fullres)
        assert plans["configurations"]["3d_cascade_fullres"] == source["configurations"]["3d_cascade_fullres"]
    pm, src = PlansManager(plans), PlansManager(source)
    # nnU-Net's default network at the planned patch, built by the stock planner (a target so large it never
    # shrinks the patch: median = planned patch)
    stock = ExperimentPlanner(dataset_id, gpu_memory_target_in_gb=1e6)
    check = BudgetPlanner(dataset_id, arch, gb, "unused")
    for name in source["configurations"]:
        cfg, before = pm.get_configuration(name).configuration, src.get_configuration(name).configuration
        unchanged = {"patch_size", "batch_size", "architecture", BUDGET_KEY}
        assert {k: v for k, v in cfg.items() if k not in unchanged} == \
               {k: v for k, v in before.items() if k not in unchanged}, name  # data_identifier, spacing, ...
        assert cfg[BUDGET_KEY] == {"arch": arch, "gpu_memory_target_gb": gb}
        assert cfg["architecture"]["network_class_name"] == presets.preset(arch)["network_class_name"]
        patch, batch = cfg["patch_size"], cfg["batch_size"]
        assert all(p % s == 0 for p, s in zip(patch, total_stride(cfg["architecture"]["arch_kwargs"]["strides"])))
        default = stock.get_plans_for_configuration(cfg["spacing"], patch, "x", 1e12, {})
        assert [int(p) for p in default["patch_size"]] == patch
        # nnU-Net's topology for the new patch, truncated to our depth (not the source plan's)
        ours = derive_architecture(arch, default["architecture"])
        assert cfg["architecture"] == json.loads(json.dumps(ours, default=int)), name
        proxy = ExperimentPlanner.static_estimate_VRAM_usage(
            patch, 1, 3, default["architecture"]["network_class_name"], default["architecture"]["arch_kwargs"],
            default["architecture"]["_kw_requires_import"])
        estimate = proxy * check.memory_ratio(default["architecture"], patch, 1, 3)
        dim = len(patch)
        reference = (check.UNet_reference_val_2d if dim == 2 else check.UNet_reference_val_3d) * gb / 8
        ref_bs = check.UNet_reference_val_corresp_bs_2d if dim == 2 else check.UNet_reference_val_corresp_bs_3d
        assert estimate * 2 / ref_bs <= reference, name  # batch 2 fits: nnU-Net's shrinking condition
        assert batch <= max(2, round(reference / estimate * ref_bs)), name  # nnU-Net's batch rule
    # and the budget is used: a network lighter than nnU-Net's gets at least nnU-Net's step at the same target
    # (heavier: at most), strictly more somewhere when the difference is large (3d_fullres is not at its median)
    ratios = {n: check.memory_ratio(src.get_configuration(n).configuration["architecture"],
                                    src.get_configuration(n).patch_size, 1, 3) for n in ("2d", "3d_fullres")}
    ours, nnunet = _steps(plans), _steps(source)
    for n, r in ratios.items():
        assert (ours[n] - nnunet[n]) * (1 - r) >= 0, (n, r)
    if ratios["3d_fullres"] < 0.8 or ratios["3d_fullres"] > 1.25:
        assert ours["3d_fullres"] != nnunet["3d_fullres"]


def test_a_smaller_budget_gives_smaller_or_equal_steps(stub):
    folder, _ = stub
    big, small = _steps(_planned(folder, "lgmsnet", 1)), _steps(_planned(folder, "lgmsnet", 0.125))
    assert all(small[n] <= big[n] for n in big)
    assert any(small[n] < big[n] for n in big)


def test_without_the_flag_the_plans_keep_nnunets_patch_and_batch(stub):
    folder, source = stub
    assert _derive("--arch", "lmnet", "--overwrite")[0] == 0
    plans = json.loads((folder / "nnUNetPlans_LMNet.json").read_text())
    assert plans["plans_name"] == "nnUNetPlans_LMNet"
    for name, cfg in plans["configurations"].items():
        want = source["configurations"][name]
        assert (cfg.get("patch_size"), cfg.get("batch_size")) == (want.get("patch_size"), want.get("batch_size"))
        assert BUDGET_KEY not in cfg


@pytest.mark.parametrize("value", ["0", "-2", "nan"])
def test_a_budget_that_is_not_positive_is_refused(stub, value):
    code, err = _derive("--arch", "lmnet", "--gpu-memory-target", value)
    assert code == 2 and "--gpu-memory-target must be a positive number of GB" in err


def test_a_budget_too_small_for_any_patch_is_refused(stub, monkeypatch):
    monkeypatch.setattr(BudgetPlanner, "memory_ratio", lambda *a: 1e6)  # nothing fits; no need to measure
    code, err = _derive("--arch", "lmnet", "--gpu-memory-target", "1", "--overwrite")
    assert code == 2 and "too small" in err and "not even a patch" in err


def test_a_missing_fingerprint_names_the_command_to_run(stub):
    folder, source = stub
    name = _write_stub_dataset(folder.parent.parent, 991, *STUBS["iso"][1:], STUB_CASES, fingerprint=False)
    (folder.parent / name / "nnUNetPlans.json").write_text(json.dumps(dict(source, dataset_name=name)))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["derive-plans", "-d", "991", "--arch", "lmnet", "--gpu-memory-target", "8"]) == 2
    assert "dataset_fingerprint.json not found" in err.getvalue()
    assert "nnUNetv2_extract_fingerprint -d 991" in err.getvalue()


# ------------------------------------------------------------------------------------------------- the trainers
def _plans_configuration(**extra):
    strides, kernels, patch = nnunet_topology((64, 64))
    return dict(default_configuration(strides, kernels, patch, batch_size=12), **extra)


def _fake_estimate(ours: float, default: float):
    def estimate(architecture, cin, classes, patch):
        return (default if "PlainConvUNet" in architecture["network_class_name"] else ours) / 12
    return estimate


def _warning(arch="lmnet", configuration=None, plans_name="nnUNetPlans"):
    return memory_check.memory_warning(arch, configuration or _plans_configuration(), 1, 3, "Dataset004_Hippocampus",
                                       plans_name)


def test_the_memory_line_names_both_numbers_and_the_fix(monkeypatch):
    monkeypatch.setattr(memory_check, "saved_bytes_per_sample_estimate", _fake_estimate(3 * 2**30, 2**30))
    line = _warning()
    assert "LM-Net at patch [64, 64] x batch 12" in line and "~3.00 GiB" in line and "~1.00 GiB" in line
    assert "PlainConvUNet" in line
    assert "nnunet-lmnet derive-plans -d Dataset004_Hippocampus --arch lmnet --gpu-memory-target" in line
    assert "-p nnUNetPlans_LMNet_<GPU GB>G" in line
    assert "-s nnUNetPlans_x --gpu-memory-target" in _warning(plans_name="nnUNetPlans_x")
    assert "\n" not in line
    # no line: ours fits, plans made for our network's budget, plans already describing our network
    monkeypatch.setattr(memory_check, "saved_bytes_per_sample_estimate", _fake_estimate(2**30, 2**30))
    assert _warning() is None
    monkeypatch.setattr(memory_check, "saved_bytes_per_sample_estimate", _fake_estimate(3 * 2**30, 2**30))
    assert _warning(configuration=_plans_configuration(**{BUDGET_KEY: {"arch": "lmnet"}})) is None
    ours = _plans_configuration()
    ours["architecture"] = derive_architecture("lmnet", ours["architecture"])
    assert _warning(configuration=ours) is None


@pytest.mark.parametrize("arch", ARCHS)
def test_the_memory_line_with_real_estimates(arch):
    cfg = _plans_configuration()
    ours = saved_bytes_per_sample_estimate(derive_architecture(arch, cfg["architecture"]), 1, 3, cfg["patch_size"])
    default = saved_bytes_per_sample_estimate(cfg["architecture"], 1, 3, cfg["patch_size"])
    assert (_warning(arch) is None) == (ours <= default)
    n = len(cfg["architecture"]["arch_kwargs"]["features_per_stage"])
    cfg["architecture"]["arch_kwargs"]["features_per_stage"] = [2] * n  # an nnU-Net network far lighter than ours
    assert "more than the" in _warning(arch, configuration=cfg)


def test_the_trainer_logs_the_line_once_at_train_start(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    plans = dict(plans_with({"2d": _plans_configuration()}), continue_training=False)
    dataset_json = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 4,
                    "file_ending": ".png"}
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = nnUNetTrainerLMNet(plans, "2d", 0, dataset_json, torch.device("cpu"))
    trainer.num_input_channels = 1  # set by initialize(), which the stubbed stock on_train_start would call
    warning = mock.Mock(return_value="LINE")
    with mock.patch("nnunetv2.training.nnUNetTrainer.nnUNetTrainer.nnUNetTrainer.on_train_start"), \
            mock.patch("nnunet_lmnet.training.trainers.memory_warning", warning), \
            mock.patch.object(trainer, "print_to_log_file") as log:
        trainer.on_train_start()
        log.assert_called_once_with("LINE")
        arch, configuration, cin, heads, dataset, plans_name = warning.call_args.args
        assert (arch, cin, heads, dataset, plans_name) == ("lmnet", 1, 3, "Dataset999_Synthetic", "nnUNetPlans")
        # what nnU-Net planned for, not our rewrite (which the trainer trains)
        assert configuration["architecture"]["network_class_name"].endswith("PlainConvUNet")
        assert trainer.configuration_manager.network_arch_class_name.endswith("LMNet")
        warning.side_effect = RuntimeError("boom")  # a failing estimate is logged, the training goes on
        log.reset_mock()
        trainer.on_train_start()
        assert "skipped (RuntimeError: boom)" in log.call_args.args[0]
