"""A trained model folder, checked before nnU-Net's predictor loads it: folder, folds, checkpoints, input images.

nnU-Net's own loader fails on these with a bare FileNotFoundError or a pickle traceback deep inside torch.load;
here each gets one line that names the file and says what to do. Only the standard library at module level.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..nnunet_paths import load_json_file

FINAL_CHECKPOINT = "checkpoint_final.pth"
CHECKPOINT_KEYS = ("network_weights", "trainer_name", "init_args")


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    trainer: str
    plans: str
    configuration: str
    folds: tuple[int | str, ...]
    checkpoint: str

    def fold_dir(self, fold: int | str) -> Path:
        return self.path / f"fold_{fold}"

    def checkpoint_path(self, fold: int | str) -> Path:
        return self.fold_dir(fold) / self.checkpoint


def parse_fold_args(values) -> tuple[int | str, ...]:
    """nnU-Net's -f: fold numbers or 'all' (duplicates dropped, order kept)."""
    out: list[int | str] = []
    for v in values:
        text = str(v).strip()
        if text == "all":
            fold: int | str = "all"
        elif re.fullmatch(r"\d+", text):
            fold = int(text)
        else:
            raise UserError(f"-f/--folds takes fold numbers or 'all' (e.g. -f 0 1 2 3 4), got '{v}'.")
        if fold not in out:
            out.append(fold)
    if not out:
        raise UserError("-f/--folds: give at least one fold.")
    return tuple(out)


def locate_model_folder(dataset: str, configuration: str, trainer: str, plans: str = "nnUNetPlans") -> Path:
    """$nnUNet_results/<Dataset>/<trainer>__<plans>__<configuration>, as nnUNetv2_predict finds it."""
    from ..nnunet_paths import model_folder, require_env_folder, resolve_dataset_name

    results = require_env_folder("nnUNet_results")
    name = resolve_dataset_name(dataset)
    folder = model_folder(results, name, trainer, plans, configuration)
    if not folder.is_dir():
        trained = sorted(p.name for p in (results / name).glob("*__*__*") if p.is_dir())
        raise UserError(
            f"no trained model {folder}. Check -tr/-p/-c (trained here: {', '.join(trained) or 'none'}), or train "
            f"it: nnUNetv2_train {dataset} {configuration} FOLD -tr {trainer}"
            + (f" -p {plans}" if plans != "nnUNetPlans" else "") + "."
        )
    return folder


def _trained_folds(folder: Path) -> str:
    folds = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
    return ", ".join(folds) or "none"


def check_model_folder(folder: Path, folds, checkpoint: str = FINAL_CHECKPOINT) -> ModelFolder:
    """Every file the predictor reads exists; each fold's checkpoint is a finished, readable nnU-Net checkpoint."""
    from ..nnunet_paths import split_model_folder_name

    folder = Path(folder)
    trainer, plans, configuration = split_model_folder_name(folder)
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name} not found: {folder} is not a complete nnU-Net model folder "
                            f"(nnUNetv2_train writes {name} there when training starts).")
    model = ModelFolder(folder, trainer, plans, configuration, parse_fold_args(folds), checkpoint)
    for fold in model.folds:
        _check_fold(model, fold)
    return model


def _check_fold(model: ModelFolder, fold: int | str) -> None:
    fold_dir, path = model.fold_dir(fold), model.checkpoint_path(fold)
    if not fold_dir.is_dir():
        raise UserError(f"{model.path} has no fold_{fold} (trained folds: {_trained_folds(model.path)}). Train it "
                        f"(nnUNetv2_train ... {fold} -tr {model.trainer}) or pick trained folds with -f.")
    if path.is_file():
        _check_checkpoint(path)
        return
    present = sorted(p.name for p in fold_dir.glob("checkpoint_*.pth"))
    if model.checkpoint == FINAL_CHECKPOINT and "checkpoint_latest.pth" in present:
        raise UserError(
            f"{fold_dir} has checkpoint_latest.pth but no {FINAL_CHECKPOINT}: the training of fold {fold} has not "
            f"finished. Finish it (nnUNetv2_train ... {fold} -tr {model.trainer} --c), or use the unfinished "
            f"weights on purpose with --checkpoint checkpoint_latest.pth (or checkpoint_best.pth).")
    raise UserError(f"{path} not found (checkpoints in {fold_dir}: {', '.join(present) or 'none'}). Pass one of "
                    f"them with --checkpoint, or train fold {fold}.")


def _check_checkpoint(path: Path) -> None:
    import pickle
    import zipfile

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {e}). It is damaged or was only partly "
                        f"written (e.g. an interrupted copy or training): copy it again or retrain the fold.") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in CHECKPOINT_KEYS):
        raise UserError(f"{path} is not an nnU-Net training checkpoint (it needs the keys "
                        f"{', '.join(CHECKPOINT_KEYS)}): pass the checkpoint nnUNetv2_train wrote.")


def check_input_folder(folder: Path, dataset_json: dict) -> list[str]:
    """The case ids in an nnU-Net input folder (CASE_0000<ending>, CASE_0001<ending> ...), each with exactly the
    channels the model was trained on."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"input folder {folder} does not exist.")
    ending = dataset_json["file_ending"]
    channels = dataset_json.get("channel_names") or dataset_json.get("modality") or {}
    n = len(channels)
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending))
    found: dict[str, set[int]] = {}
    for p in sorted(folder.iterdir()):
        m = pattern.fullmatch(p.name)
        if m and p.is_file():
            found.setdefault(m.group(1), set()).add(int(m.group(2)))
    if not found:
        raise UserError(f"no input images in {folder}: nnU-Net expects CASE_0000{ending} (one file per channel "
                        f"_0000 ... _{n - 1:04d}, file ending {ending} as in the model's dataset.json).")
    expected = set(range(n))
    for case, got in found.items():
        if got != expected:
            have = ", ".join(f"_{c:04d}" for c in sorted(got))
            want = ", ".join(f"_{c:04d}" for c in sorted(expected))
            raise UserError(
                f"case '{case}' in {folder} has the channel files {have}, but the model was trained on {n} "
                f"channel(s) ({', '.join(str(v) for v in channels.values())}): it needs {want}{ending}.")
    return sorted(found)


def model_jsons(folder: Path) -> tuple[dict, dict]:
    return (load_json_file(folder / "plans.json", "plans file"),
            load_json_file(folder / "dataset.json", "dataset.json"))
