"""Reading finished cross-validation folds of an nnU-Net model folder.

A fold counts as finished when ``fold_<k>/validation/summary.json`` exists (nnU-Net writes it after the final
validation). Summaries are read with nnU-Net's ``load_summary_json``; metric keys are kept in nnU-Net's string form
(``'1'`` for a label, ``'(1, 2)'`` for a region).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..nnunet_paths import case_id_from_file, load_json_file

CASE_FIELDS = ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_ref", "n_pred")  # per case and class in summary.json


@dataclass
class ModelRun:
    trainer: str
    folder: Path
    requested_folds: list[int]
    finished: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    summaries: dict[int, dict] = field(default_factory=dict)
    dataset_json: dict = field(default_factory=dict)

    @property
    def file_ending(self) -> str | None:
        return self.dataset_json.get("file_ending")

    def summary_file(self, fold: int) -> Path:
        return self.folder / f"fold_{fold}" / "validation" / "summary.json"

    # ---------------------------------------------------------------- tables as lists of dicts
    def fold_rows(self) -> list[dict]:
        """Per fold: Dice and IoU per class (nnU-Net's nanmean over cases) and the foreground mean ('mean')."""
        from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key

        rows = []
        for k in self.finished:
            s = self.summaries[k]
            for key, metrics in s.get("mean", {}).items():
                rows.append({"trainer": self.trainer, "fold": k, "class": label_or_region_to_key(key),
                             "Dice": _num(metrics.get("Dice")), "IoU": _num(metrics.get("IoU"))})
            fg = s.get("foreground_mean", {})
            rows.append({"trainer": self.trainer, "fold": k, "class": "mean",
                         "Dice": _num(fg.get("Dice")), "IoU": _num(fg.get("IoU"))})
        return rows

    def case_rows(self) -> list[dict]:
        """Per case and class: Dice, IoU, TP, FP, FN, TN, n_ref, n_pred and the prediction/reference paths."""
        rows = []
        for k in self.finished:
            rows += summary_case_rows(self.summaries[k], self.trainer, k, self.file_ending)
        return rows


def summary_case_rows(summary: dict, trainer: str, fold, file_ending: str | None) -> list[dict]:
    """The per-case rows of one nnU-Net summary.json (as loaded by ``load_summary_json``)."""
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key

    rows = []
    for entry in summary.get("metric_per_case", []):
        case = case_id_from_file(entry.get("prediction_file", ""), file_ending)
        for key, m in entry.get("metrics", {}).items():
            row = {"trainer": trainer, "fold": fold, "case": case, "class": label_or_region_to_key(key)}
            row.update({name: _num(m.get(name)) for name in CASE_FIELDS})
            row.update(prediction_file=entry.get("prediction_file", ""),
                       reference_file=entry.get("reference_file", ""))
            rows.append(row)
    return rows


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def load_run(folder: Path, trainer: str, folds: list[int], require_finished: bool = True) -> ModelRun:
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    if not folder.is_dir():
        siblings = sorted(p.name for p in folder.parent.glob("*__*__*") if p.is_dir()) if folder.parent.is_dir() \
            else []
        hint = f" Model folders there: {', '.join(siblings)}." if siblings else ""
        raise UserError(f"no results for trainer {trainer}: {folder} does not exist. Check -tr/-p/-c and "
                        f"nnUNet_results.{hint}")
    run = ModelRun(trainer=trainer, folder=folder, requested_folds=list(folds))
    if (folder / "dataset.json").is_file():
        run.dataset_json = load_json_file(folder / "dataset.json", "dataset.json")
    for k in folds:
        f = run.summary_file(k)
        if not f.is_file():
            run.missing.append(k)
            continue
        try:
            run.summaries[k] = load_summary_json(str(f))
        except Exception as e:
            raise UserError(f"cannot read {f}: {e}. Re-run the validation of fold {k} "
                            f"(nnUNetv2_train ... {k} --val) to rewrite it.") from None
        run.finished.append(k)
    if not run.finished and require_finished:
        raise UserError(
            f"trainer {trainer} has no finished fold among {folds}: none of "
            f"{folder}/fold_<k>/validation/summary.json exists. Train (or validate with --val) at least one fold, "
            f"or select the folds that exist with -f."
        )
    return run
