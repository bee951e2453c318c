"""`nnunet-lmnet benchmark`: one real run on a tiny synthetic 2D plan (CPU, 1 thread), input resolution and errors."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_lmnet.benchmark.complexity import count_macs, count_parameters_in_state_dict
from nnunet_lmnet.benchmark.compute import ARCHS, add_ratios, markdown_report, resolve_inputs
from nnunet_lmnet.benchmark.saved_activations import saved_bytes_per_sample
from nnunet_lmnet.benchmark.synthetic_plans import plans_with, synthetic_configuration
from nnunet_lmnet.cli import main
from nnunet_lmnet.training.network_builder import build_network

TINY = ["--synthetic", "2d", "--patch", "64", "64", "--batch-size", "2", "--repeats", "2", "--warmup", "1",
        "--threads", "1", "--device", "cpu"]
RECORD_KEYS = {"params", "macs", "flops", "macs_inference", "flops_inference", "train_step_s", "inference_s",
               "train_step_times_s", "inference_times_s", "peak_memory_bytes", "memory_baseline_bytes",
               "peak_memory_delta_bytes", "peak_memory_inference_bytes", "ratio_to_default", "strides", "threads",
               "saved_activation_bytes_per_sample"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["benchmark", *TINY, "--out", str(out)]) == 0
    return out, json.loads((out / "benchmark.json").read_text()), stdout.getvalue()


def _cli_error(capsys, *args) -> str:
    assert main(["benchmark", *args]) == 2
    return capsys.readouterr().err


def test_json_fields(run):
    _, r, _ = run
    assert list(r["networks"]) == list(ARCHS)
    assert {"cpu_model", "cpu_count", "torch", "nnunetv2", "device", "device_name", "threads"} <= set(r["machine"])
    assert r["machine"]["threads"] == 1 and r["machine"]["device"] == "cpu"
    c = r["configuration"]
    assert (c["patch_size"], c["batch_size"], c["in_channels"], c["num_outputs"]) == ([64, 64], 2, 1, 2)
    assert c["strides"] == [[1, 1]] + [[2, 2]] * 4
    for arch, rec in r["networks"].items():
        assert RECORD_KEYS <= set(rec), arch
        assert rec["threads"] == 1
        assert all(rec[k] > 0 for k in ("params", "macs", "train_step_s", "inference_s", "peak_memory_bytes",
                                        "peak_memory_inference_bytes")), arch
        assert rec["flops"] == 2 * rec["macs"] and len(rec["train_step_times_s"]) == 2
        assert rec["peak_memory_bytes"] >= rec["memory_baseline_bytes"] > 0
    # LM-Net's multi-branch blocks run fused at inference: fewer MACs; the others are unchanged
    n = r["networks"]
    assert n["lmnet"]["macs_inference"] < n["lmnet"]["macs"]
    assert n["default"]["macs_inference"] == n["default"]["macs"]
    # the memory-lean training forms keep less than the default network (issue targets: <= 1.0x and <= 0.8x)
    saved = {k: v["saved_activation_bytes_per_sample"] for k, v in n.items()}
    assert saved["lmnet"] < saved["default"] and saved["lgmsnet"] < 0.8 * saved["default"], saved


def test_counts_equal_the_existing_counters(run):
    _, r, _ = run
    cfg = synthetic_configuration("2d", (64, 64), 2)
    cm = ConfigurationManager(cfg)
    arch = cfg["architecture"]
    nets = {"default": get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                              arch["_kw_requires_import"], 1, 2, deep_supervision=False),
            "lmnet": build_network("lmnet", cm, 1, 2, False), "lgmsnet": build_network("lgmsnet", cm, 1, 2, False)}
    for name, net in nets.items():
        rec = r["networks"][name]
        assert rec["params"] == count_parameters_in_state_dict(net.state_dict()) == sum(
            p.numel() for p in net.parameters())
        assert rec["macs_inference"] == count_macs(net, (1, 1, 64, 64))
        net.decoder.deep_supervision = True
        net.train()
        assert rec["saved_activation_bytes_per_sample"] == saved_bytes_per_sample(net, torch.randn(1, 1, 64, 64))
        net.decoder.deep_supervision = False
        for m in net.modules():
            if hasattr(m, "fuse_in_eval"):
                m.fuse_in_eval = False
        assert rec["macs"] == count_macs(net, (1, 1, 64, 64))


def test_ratios_are_to_the_default_of_the_same_run(run):
    _, r, _ = run
    base = r["networks"]["default"]
    for rec in r["networks"].values():
        ratios = rec["ratio_to_default"]
        assert {"params", "macs", "train_step_s", "inference_s", "peak_memory_bytes",
                "saved_activation_bytes_per_sample"} <= set(ratios)
        for key, value in ratios.items():
            assert value == rec[key] / base[key]
    assert all(v == 1.0 for v in base["ratio_to_default"].values())


def test_markdown_table(run):
    out, r, stdout = run
    md = (out / "benchmark.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 + 3  # header, separator, one row per network
    for name in ("nnU-Net default", "LM-Net", "LGMSNet"):
        assert any(row.startswith(f"| {name} |") for row in rows)
    assert "×" in md and md.strip() in stdout
    assert "| Saved activations per sample |" in rows[0]

    # without 'default' the ratios are left out, and the report says so
    r["networks"].pop("default")
    r["notes"]["ratios"] = add_ratios(r["networks"])
    md = markdown_report(r)
    assert all(rec["ratio_to_default"] is None for rec in r["networks"].values())
    assert "omitted: 'default' not among" in md and "×" not in md


def test_interleaved_run_times_all_networks_round_by_round(tmp_path):
    """--interleaved: one process, `repeats` rounds per phase, paired ratios from the per-round times, the same
    device-independent counts as a run with a process per network, no peak memory."""
    out = tmp_path / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["benchmark", *TINY, "--archs", "default", "lgmsnet", "--interleaved", "--out", str(out)]) == 0
    r = json.loads((out / "benchmark.json").read_text())
    assert list(r["networks"]) == ["default", "lgmsnet"]
    assert r["settings"]["timing"].startswith("interleaved")
    base, ours = r["networks"]["default"], r["networks"]["lgmsnet"]
    for rec in (base, ours):
        assert len(rec["train_step_times_s"]) == len(rec["inference_times_s"]) == 2
        assert "peak_memory_bytes" not in rec and rec["saved_activation_bytes_per_sample"] > 0
    paired = ours["paired_ratio_to_default"]
    for key in ("train_step", "inference"):
        per_round = [a / b for a, b in zip(ours[f"{key}_times_s"], base[f"{key}_times_s"])]
        assert paired[key] == pytest.approx(sum(per_round) / 2)  # median of two rounds
    assert base["paired_ratio_to_default"] == {"train_step": 1.0, "inference": 1.0}
    md = (out / "benchmark.md").read_text()
    assert f"paired {paired['train_step']:.2f}×" in md and "Memory: not measured" in md
    row = next(line for line in md.splitlines() if line.startswith("| LGMSNet |"))
    assert row.endswith("| n/a | n/a |")


def test_paired_ratios_take_the_median_of_same_round_quotients():
    from nnunet_lmnet.benchmark.compute import paired_ratios

    networks = {"default": {"arch": "default", "train_step_times_s": [1.0, 4.0, 2.0], "inference_times_s": [1, 1, 1]},
                "lmnet": {"arch": "lmnet", "train_step_times_s": [0.5, 4.0, 3.0], "inference_times_s": [2, 3, 4]},
                "lgmsnet": {"arch": "lgmsnet", "error": "out of memory"}}
    paired_ratios(networks)
    # quotients 0.5, 1.0, 1.5 -> 1.0, while the ratio of the medians would be 3.0 / 2.0
    assert networks["lmnet"]["paired_ratio_to_default"] == {"train_step": 1.0, "inference": 3.0}
    assert networks["lgmsnet"]["paired_ratio_to_default"] is None


def test_existing_output_is_refused(run, capsys):
    out, _, _ = run
    before = (out / "benchmark.json").read_text()
    err = _cli_error(capsys, *TINY, "--out", str(out))
    assert "already exists" in err and "--overwrite" in err
    assert (out / "benchmark.json").read_text() == before


def test_input_errors(tmp_path, monkeypatch, capsys):
    err = _cli_error(capsys, "--plans", str(tmp_path / "nope.json"), "-c", "2d")
    assert "plans file not found" in err and "nope.json" in err

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    (tmp_path / "nnUNet_preprocessed" / "Dataset999_Synthetic").mkdir()
    err = _cli_error(capsys, "-d", "999", "-c", "2d")
    assert "plans file not found" in err and "nnUNetv2_plan_and_preprocess" in err
    assert "cannot resolve dataset" in _cli_error(capsys, "-d", "123", "-c", "2d")

    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps(plans_with({"2d": synthetic_configuration("2d", (64, 64), 2)})))
    err = _cli_error(capsys, "--plans", str(plans), "-c", "3d_fullres")
    assert "no configuration '3d_fullres'" in err and "['2d']" in err
    assert "not divisible" in _cli_error(capsys, "--plans", str(plans), "-c", "2d", "--patch", "40", "64")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in _cli_error(capsys, "--plans", str(plans), "-c", "2d", "--device", "cuda")


def test_channels_come_from_dataset_json(tmp_path, monkeypatch):
    pre = tmp_path / "pre"
    folder = pre / "Dataset999_Synthetic"
    folder.mkdir(parents=True)
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans_with({"2d": synthetic_configuration("2d", (64, 64),
                                                                                                  4)})))
    dataset = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "a": 1, "b": 2},
               "numTraining": 1, "file_ending": ".png"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    kw = resolve_inputs(dataset="999", configuration="2d")
    assert (kw["in_channels"], kw["num_outputs"], kw["regions"]) == (3, 3, False)
    assert kw["configuration"]["batch_size"] == 4 and kw["label"] == "Dataset999_Synthetic__nnUNetPlans__2d"

    dataset["labels"] = {"background": 0, "kidney": [1, 2], "tumor": 2}
    dataset["regions_class_order"] = [1, 2]
    (folder / "dataset.json").write_text(json.dumps(dataset))
    kw = resolve_inputs(dataset="Dataset999_Synthetic", configuration="2d", batch_size=3)
    assert (kw["num_outputs"], kw["regions"], kw["configuration"]["batch_size"]) == (2, True, 3)
    assert resolve_inputs(dataset="999", configuration="2d", in_channels=1, classes=5)["num_outputs"] == 5
