"""The steps every converter ends with, in one place so none of them can skip one.

``seal`` runs inside ``staged_dataset`` (the files land in the hidden folder, and nnU-Net's check can still stop
the move into place); ``announce`` runs after the dataset has appeared in ``$nnUNet_raw``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .common import Stage, report, verify_dataset, write_case_mapping
from .splits import warn_if_preprocessed_differs, write_splits


def seal(stage: Stage, source_root: Path, folds: list[dict], mapping: Mapping[str, Sequence[Path]], verify: bool,
         num_processes: int) -> None:
    """splits_final.json, case_mapping.json and, if asked, nnU-Net's integrity check of the staged folder."""
    write_splits(stage.dir, folds)
    write_case_mapping(stage.dir, source_root, mapping)
    if verify:
        verify_dataset(stage.dir, num_processes)


def announce(stage: Stage, folds: list[dict], num_training: int, num_test: int, splits_note: str) -> Path:
    """Warn if nnU-Net's preprocessed folder holds other splits, print the summary; returns the dataset folder."""
    warn_if_preprocessed_differs(stage.name, folds)
    report(stage.target, num_training, num_test, splits_note)
    return stage.target
