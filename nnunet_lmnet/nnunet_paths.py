"""Where nnU-Net keeps things: environment folders, dataset names, model folders, folds, class names, case ids.

Only the standard library is imported at module level; nnunetv2 is imported inside the functions.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from .errors import UserError

DEFAULT_FOLDS = (0, 1, 2, 3, 4)
EXT_TRAINER_HINT = 'export nnUNet_extTrainer="$(nnunet-lmnet trainer-path)"'


# --------------------------------------------------------------------------------------------- environment / layout
def require_env_folder(var: str) -> Path:
    """The folder named by an nnU-Net environment variable; UserError if unset or missing."""
    value = os.environ.get(var)
    if not value:
        raise UserError(f"{var} is not set. Export it (e.g. `export {var}=/path/to/{var}`) and run again.")
    path = Path(value)
    if not path.is_dir():
        raise UserError(f"{var}={value} is not a folder. Point {var} at your nnU-Net {var} folder.")
    return path


def resolve_dataset_name(dataset: str) -> str:
    """`-d 42`, `-d 042` or `-d Dataset042_Name` -> `Dataset042_Name`, using nnU-Net's own lookup."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        return str(maybe_convert_to_dataset_name(dataset))
    except (RuntimeError, ValueError, AssertionError) as e:
        raise UserError(
            f"cannot resolve dataset '{dataset}': {e}. Give a dataset id or a full DatasetXXX_Name that exists in "
            f"nnUNet_results, nnUNet_preprocessed or nnUNet_raw."
        ) from None


def model_folder(results: Path, dataset_name: str, trainer: str, plans: str, configuration: str) -> Path:
    from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier

    return results / dataset_name / convert_trainer_plans_config_to_identifier(trainer, plans, configuration)


def split_model_folder_name(folder: Path) -> tuple[str, str, str]:
    """`<trainer>__<plans>__<configuration>` -> its three parts (UserError if the name has another form)."""
    from nnunetv2.utilities.file_path_utilities import convert_identifier_to_trainer_plans_config

    parts = convert_identifier_to_trainer_plans_config(str(folder))
    if len(parts) != 3 or not all(parts):
        raise UserError(
            f"{folder} is not an nnU-Net model folder: its name must be <trainer>__<plans>__<configuration> "
            f"(e.g. nnUNetTrainerLMNet__nnUNetPlans__2d)."
        )
    return parts[0], parts[1], parts[2]


def load_json_file(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is not valid JSON ({e}); regenerate it with nnU-Net.") from None


def parse_folds(folds: Iterable[str | int] | None) -> list[int]:
    if folds is None:
        return list(DEFAULT_FOLDS)
    out: list[int] = []
    for f in folds:
        try:
            k = int(f)
        except (TypeError, ValueError):
            raise UserError(f"-f/--folds takes fold numbers (e.g. -f 0 1 2 3 4), got '{f}'.") from None
        if k < 0:
            raise UserError(f"-f/--folds: fold numbers are >= 0, got {k}.")
        if k not in out:
            out.append(k)
    return out


# --------------------------------------------------------------------------------------------- labels
def class_names(dataset_json: dict) -> dict[str, str]:
    """Map nnU-Net's metric keys (``'1'``, ``'(1, 2)'``) to the label names of dataset.json."""
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key

    names: dict[str, str] = {}
    for name, value in (dataset_json.get("labels") or {}).items():
        region = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        if not region:
            continue
        names.setdefault(label_or_region_to_key(region), name)  # region key, e.g. '(1, 2)' or '(2,)'
        if len(region) == 1:
            names.setdefault(label_or_region_to_key(region[0]), name)  # plain label key, e.g. '2'
    return names


def sort_class_keys(keys: Iterable[str]) -> list[str]:
    from nnunetv2.evaluation.evaluate_predictions import key_to_label_or_region

    def order(k: str):
        v = key_to_label_or_region(k)
        return (0, v, ()) if isinstance(v, int) else (1, 0, tuple(v))

    return sorted(set(keys), key=order)


def case_id_from_file(path: str, file_ending: str | None) -> str:
    name = os.path.basename(path)
    if file_ending and name.endswith(file_ending):
        return name[: -len(file_ending)]
    for ending in (".nii.gz", ".nrrd", ".mha", ".nii", ".png", ".tif", ".tiff", ".bmp", ".npz"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return os.path.splitext(name)[0]
