"""``nnunet-lmnet demo``: the whole nnU-Net pipeline with LM-Net or LGMSNet on a built-in synthetic dataset.

Writes a small 2D dataset, then runs the stock commands: ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train``
(with ``-tr nnUNetTrainerLMNet_Demo``: nnUNetTrainerLMNet with a short schedule), ``nnUNetv2_predict`` on the
held-out cases and ``nnUNetv2_evaluate_folder``, and prints the Dice per class and where everything is.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .errors import UserError

DEMO_DATASET_ID = 980
TRAINERS = {"lmnet": "nnUNetTrainerLMNet_Demo", "lgmsnet": "nnUNetTrainerLGMSNet_Demo"}

# Written into every folder the demo uses: --overwrite only ever clears a folder that holds it.
MARKER = ".nnunet_lmnet_demo"
# Everything a demo run creates in its folder; --overwrite removes these and nothing else.
DEMO_ENTRIES = (MARKER, "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "predictions")


def prepare_output_folder(out: Path, overwrite: bool) -> Path:
    """Make `out` ready for a demo run and mark it as the demo's; refuse to touch anything the demo did not make.

    A new or empty folder is used as it is. A folder with the marker (an earlier demo run) is cleared with
    ``overwrite``, but only of the demo's own entries, and only if it holds nothing else.
    """
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder. Choose a new folder with --out.")
    if out.is_dir() and any(out.iterdir()):
        _check_is_demo_folder(out, overwrite)
        for name in DEMO_ENTRIES:
            _remove(out / name)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("This folder was made by `nnunet-lmnet demo`; `--overwrite` may replace it.\n")
    return out


def _check_is_demo_folder(out: Path, overwrite: bool) -> None:
    if not (out / MARKER).is_file():
        raise UserError(f"--out {out} is not empty and was not made by the demo (it has no {MARKER} file), so "
                        f"the demo will not write into it or delete it, even with --overwrite. Choose a new or "
                        f"empty folder with --out. (Folders made by earlier versions of the demo have no marker: "
                        f"delete such a folder yourself.)")
    if not overwrite:
        raise UserError(f"--out {out} holds an earlier demo run: pass --overwrite to replace it, or choose "
                        f"another folder with --out.")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UserError(f"--out {out} holds an earlier demo run but also files the demo did not make ({shown}), "
                        f"so --overwrite will not clear it. Move those files elsewhere, or choose another folder "
                        f"with --out.")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()  # a link is removed, never what it points to
    elif path.is_dir():
        shutil.rmtree(path)


def run_demo(out: Path, arch: str = "lmnet", trainer: str | None = None, num_train: int = 40, num_test: int = 8,
             overwrite: bool = False, device: str = "cpu", extra_env: dict[str, str] | None = None) -> dict:
    """Run the demo in `out` and return the evaluation summary (nnU-Net's summary.json content)."""
    from .nnunet_commands import nnunet_environment, run
    from .synthetic_dataset import write_synthetic_dataset

    out = prepare_output_folder(out, overwrite)
    trainer = trainer or TRAINERS[arch]
    env = nnunet_environment(out, **(extra_env or {}))
    start = time.time()

    print(f"[1/5] writing the synthetic dataset ({num_train} training + {num_test} held-out 2D cases)", flush=True)
    raw = write_synthetic_dataset(env["nnUNet_raw"], DEMO_DATASET_ID, dim=2, num_train=num_train,
                                  num_test=num_test)
    d = str(DEMO_DATASET_ID)
    print("[2/5] planning and preprocessing (stock nnU-Net)", flush=True)
    run("nnUNetv2_plan_and_preprocess", "-d", d, "-c", "2d", "-np", "1", "-npfp", "1",
        "--verify_dataset_integrity", env=env)
    print(f"[3/5] training {trainer} on fold 0 ({device})", flush=True)
    run("nnUNetv2_train", d, "2d", "0", "-tr", trainer, "-device", device, env={**env, "nnUNet_n_proc_DA": "0"})
    pred = out / "predictions"
    print("[4/5] predicting the held-out cases", flush=True)
    run("nnUNetv2_predict", "-i", raw / "imagesTs", "-o", pred, "-d", d, "-c", "2d", "-f", "0", "-tr", trainer,
        "-device", device, "-npp", "0", "-nps", "0", env=env)
    model = Path(env["nnUNet_results"]) / raw.name / f"{trainer}__nnUNetPlans__2d"
    print("[5/5] evaluating against the held-out labels", flush=True)
    run("nnUNetv2_evaluate_folder", raw / "labelsTs", pred, "-djfile", model / "dataset.json",
        "-pfile", model / "plans.json", "-np", "1", env=env)
    summary = json.loads((pred / "summary.json").read_text())

    names = {str(v): k for k, v in json.loads((raw / "dataset.json").read_text())["labels"].items()}
    print(f"\nDone in {time.time() - start:.0f} s. Dice on {num_test} held-out cases ({trainer}):")
    for label, metrics in summary["mean"].items():
        print(f"  {names.get(label, label):>10}: {metrics['Dice']:.3f}")
    print(f"  {'mean':>10}: {summary['foreground_mean']['Dice']:.3f}")
    print(f"\nraw dataset:  {raw}\nmodel:        {model}\npredictions:  {pred}\n"
          f"summary:      {pred / 'summary.json'}\nlog/progress: {model / 'fold_0'}")
    return summary


def _demo(args) -> int:
    run_demo(Path(args.out), arch=args.arch, overwrite=args.overwrite, device=args.device)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train and evaluate on a built-in synthetic dataset (no download)",
                              description=__doc__)
    p.add_argument("--arch", choices=sorted(TRAINERS), default="lmnet")
    p.add_argument("--out", default="nnunet_lmnet_demo", help="working folder (default: ./nnunet_lmnet_demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo run in --out (only a folder the demo made is cleared)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    p.set_defaults(func=_demo)
