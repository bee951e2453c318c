"""`nnunet-lmnet benchmark-predict`: end-to-end CPU prediction time per case, nnU-Net's default network against ours.

Runs (each with and without mirroring): nnU-Net's default network on PyTorch, ours on PyTorch, ours on ONNX Runtime.
Every case goes through nnU-Net's own steps, timed one by one, as ``predict_from_files_sequential`` runs them:

- preprocessing: ``configuration_manager.preprocessor_class().run_case`` (reading, cropping, resampling,
  normalisation);
- network: ``predictor.predict_logits_from_preprocessed_data`` (Gaussian sliding window, mirroring, folds);
- export: ``export_prediction_from_logits`` (resampling back, argmax, writing the file; into a temporary folder).

The runs are interleaved (every repeat goes through all cases, and for each case through all runs, in an order
rotated per repeat) so that a change of machine load hits every run alike; the report gives medians over cases and
repeats, after one untimed warm-up of each run, and ratios to the default network with the same mirroring, all
from one process and one invocation. Threads: torch gets `threads`; nnU-Net's predictor and export cap torch at
``nnUNet_def_n_proc`` while they run, and ONNX Runtime gets that same capped number.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from ..errors import UserError

STAGES = ("preprocessing", "network", "export")
TARGET_RATIO = 0.5  # ours on ONNX Runtime vs the default network on PyTorch, end to end, with mirroring


def _runs(with_onnxruntime: bool) -> list[tuple[str, str]]:
    runs = [("default", "torch"), ("ours", "torch")]
    return runs + [("ours", "onnxruntime")] if with_onnxruntime else runs


def _load(model, backend: str, step_size: float, onnx_files, log):
    from ..inference.onnx_backend import use_onnxruntime
    from ..inference.predict import onnx_models_for
    from ..inference.predictor import load_predictor, make_predictor

    predictor = make_predictor("cpu", step_size, use_mirroring=True)
    load_predictor(model, predictor, allow_compile=False)
    if backend == "onnxruntime":
        use_onnxruntime(predictor, onnx_models_for(predictor, model, onnx_files, log))
    return predictor


def _case_files(input_folder: Path, cases: list[str], dataset_json: dict) -> dict[str, list[str]]:
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    lists = create_lists_from_splitted_dataset_folder(str(input_folder), dataset_json["file_ending"], cases,
                                                      num_processes=1)
    return dict(zip(cases, lists))


def _predict_case(predictor, files: list[str], out_dir: str, case: str, threads: int) -> dict:
    import torch
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    t0 = time.perf_counter()
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, properties = preprocessor.run_case(files, None, predictor.plans_manager, predictor.configuration_manager,
                                                predictor.dataset_json)
    t1 = time.perf_counter()
    logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
    t2 = time.perf_counter()
    export_prediction_from_logits(logits, properties, predictor.configuration_manager, predictor.plans_manager,
                                  predictor.dataset_json, str(Path(out_dir) / case), False,
                                  num_threads_torch=threads)
    t3 = time.perf_counter()
    return {"preprocessing_s": t1 - t0, "network_s": t2 - t1, "export_s": t3 - t2, "total_s": t3 - t0,
            "preprocessed_shape": [int(v) for v in data.shape[1:]]}


def run_predict_benchmark(input_folder: Path, default_model, our_model, onnx_files=None, repeats: int = 3,
                          threads: int | None = None, step_size: float = 0.5, with_onnxruntime: bool = True,
                          log=print) -> dict:
    """Measure every (network, backend, mirroring) run on every case of `input_folder`; returns the report dict."""
    import torch
    from nnunetv2.configuration import default_num_processes

    from ..inference.deploy_extra import require_deploy
    from ..inference.model_folder import check_input_folder, model_jsons
    from .compute import machine_info

    if with_onnxruntime:
        require_deploy("benchmark-predict (the onnxruntime runs; --no-onnxruntime skips them)")
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    _, dataset_json = model_jsons(our_model.path)
    _, default_dataset_json = model_jsons(default_model.path)
    if dataset_json.get("channel_names") != default_dataset_json.get("channel_names") or \
            dataset_json.get("file_ending") != default_dataset_json.get("file_ending"):
        raise UserError(f"{default_model.path} and {our_model.path} were trained on datasets with other channels or "
                        f"file endings: compare two models of the same dataset.")
    cases = check_input_folder(input_folder, dataset_json)
    files = _case_files(input_folder, cases, dataset_json)

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    effective = max(1, min(default_num_processes, torch.get_num_threads()))
    try:
        runs = _runs(with_onnxruntime)
        models = {"default": default_model, "ours": our_model}
        predictors = {}
        for network, backend in runs:
            log(f"Loading {network} ({backend}) from {models[network].path} ...")
            predictors[(network, backend)] = _load(models[network], backend, step_size,
                                                   onnx_files if network == "ours" else None, log)
        configs = [(n, b, tta) for n, b in runs for tta in (True, False)]
        records = []
        with tempfile.TemporaryDirectory(prefix="nnunet_lmnet_benchmark_predict_") as tmp:
            for n, b, tta in configs:  # warm-up: first calls, ONNX Runtime's allocations
                predictors[(n, b)].use_mirroring = tta
                _predict_case(predictors[(n, b)], files[cases[0]], tmp, cases[0], effective)
            for r in range(repeats):
                order = configs[r % len(configs):] + configs[:r % len(configs)]
                for case in cases:
                    for n, b, tta in order:
                        predictor = predictors[(n, b)]
                        predictor.use_mirroring = tta
                        times = _predict_case(predictor, files[case], tmp, case, effective)
                        records.append({"network": n, "backend": b, "tta": tta, "case": case, "repeat": r, **times})
                log(f"repeat {r + 1}/{repeats} done")
    finally:
        torch.set_num_threads(before)
    info = machine_info("cpu", threads or before, "--threads" if threads else "torch default")
    info["threads_network_and_export"] = effective
    info["onnxruntime_threads"] = effective if with_onnxruntime else None
    return {
        "models": {"default": str(default_model.path), "ours": str(our_model.path)},
        "folds": [str(f) for f in our_model.folds], "default_folds": [str(f) for f in default_model.folds],
        "cases": cases, "repeats": repeats, "step_size": step_size, "machine": info,
        "summary": _summarise(records, configs), "records": records,
    }


def _summarise(records: list[dict], configs) -> list[dict]:
    rows = []
    for n, b, tta in configs:
        mine = [r for r in records if (r["network"], r["backend"], r["tta"]) == (n, b, tta)]
        row = {"network": n, "backend": b, "tta": tta, "runs": len(mine)}
        for key in (*STAGES, "total"):
            row[f"{key}_s"] = statistics.median(r[f"{key}_s"] for r in mine)
        rows.append(row)
    for row in rows:
        ref = next(r for r in rows if (r["network"], r["backend"], r["tta"]) == ("default", "torch", row["tta"]))
        row["total_ratio_to_default"] = row["total_s"] / ref["total_s"] if ref["total_s"] > 0 else None
        row["network_ratio_to_default"] = row["network_s"] / ref["network_s"] if ref["network_s"] > 0 else None
    return rows


def markdown_report(result: dict) -> str:
    from ..report_output import md_table

    m = result["machine"]
    rows = []
    for r in result["summary"]:
        rows.append([
            "nnU-Net default" if r["network"] == "default" else "ours", r["backend"], "yes" if r["tta"] else "no",
            *[f"{r[f'{k}_s'] * 1000:.0f} ms" for k in STAGES], f"{r['total_s'] * 1000:.0f} ms",
            f"{r['network_ratio_to_default']:.2f}×", f"{r['total_ratio_to_default']:.2f}×",
        ])
    table = md_table(["network", "backend", "mirroring (TTA)", "preprocessing", "network", "export",
                      "end-to-end per case", "network ratio", "end-to-end ratio"], rows, align_right_from=3)
    lines = [
        "# End-to-end prediction time per case (CPU)", "",
        f"Default network: `{result['models']['default']}` (folds {', '.join(result['default_folds'])}); ours: "
        f"`{result['models']['ours']}` (folds {', '.join(result['folds'])}). {len(result['cases'])} case(s) x "
        f"{result['repeats']} repeat(s), interleaved, medians; ratios to the default network (PyTorch) with the same "
        f"mirroring, from this run.", "",
        f"Machine: {m['cpu_model']} ({m['cpus_available'] or m['cpu_count']} CPUs available); torch "
        f"{m['threads']} threads ({m['threads_source']}), {m['threads_network_and_export']} while nnU-Net predicts "
        f"and exports (capped by nnUNet_def_n_proc); ONNX Runtime {m['onnxruntime_threads'] or '-'} threads. "
        f"torch {m['torch']}, nnunetv2 {m['nnunetv2']}.", "",
        table, "",
    ]
    target = next((r for r in result["summary"] if (r["network"], r["backend"], r["tta"]) ==
                   ("ours", "onnxruntime", True)), None)
    if target is not None:
        verdict = "met" if target["total_ratio_to_default"] <= TARGET_RATIO else "not met"
        lines += [f"Target: ours on ONNX Runtime ≤ {TARGET_RATIO}× the default network end to end with mirroring: "
                  f"{target['total_ratio_to_default']:.2f}× ({verdict}).", ""]
    return "\n".join(lines)


def report_paths(out_dir: Path) -> tuple[Path, Path]:
    return out_dir / "benchmark_predict.json", out_dir / "benchmark_predict.md"


def write_report(result: dict, out_dir: Path, overwrite: bool) -> tuple[Path, Path]:
    import json

    from ..report_output import atomic_write_text, refuse_existing

    paths = report_paths(out_dir)
    refuse_existing(paths, overwrite)
    atomic_write_text(paths[0], json.dumps(result, indent=2) + "\n")
    atomic_write_text(paths[1], markdown_report(result))
    return paths
