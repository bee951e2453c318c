"""What several trainers have in common: the folds every trainer finished, and within them the validation cases
every trainer has. Comparing anything else would put different case sets side by side.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError


@dataclass
class SharedSelection:
    folds: list[int]
    cases: set[tuple[int, str]]  # (fold, case id) present for every trainer
    left_out_folds: dict[str, list[int]] = field(default_factory=dict)  # finished, but not by every trainer
    left_out_cases: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # in a shared fold, not shared

    @property
    def anything_left_out(self) -> bool:
        return any(self.left_out_folds.values()) or any(self.left_out_cases.values())


def _fold_list(folds) -> str:
    return ", ".join(map(str, folds)) if folds else "none"


def shared_selection(finished: dict[str, list[int]], case_keys: dict[str, set[tuple[int, str]]]) -> SharedSelection:
    """finished: trainer -> finished folds; case_keys: trainer -> {(fold, case)} of its summaries.

    UserError when the trainers share no finished fold, or no case within the shared folds.
    """
    trainers = list(finished)
    folds = sorted(set.intersection(*(set(f) for f in finished.values())))
    if not folds:
        detail = "; ".join(f"{t}: {_fold_list(sorted(f))}" for t, f in finished.items())
        raise UserError(f"the trainers have no finished fold in common ({detail}), so there is nothing to compare "
                        f"on the same cases. Finish (or validate with --val) a fold for every trainer, or leave "
                        f"out the trainer that lacks it.")
    in_folds = {t: {k for k in case_keys[t] if k[0] in folds} for t in trainers}
    cases = set.intersection(*in_folds.values())
    if not cases:
        raise UserError(f"the trainers finished folds {_fold_list(folds)} but their validation cases have no case "
                        f"in common: were they trained with different splits_final.json? Compare trainers that "
                        f"used the same splits.")
    return SharedSelection(
        folds=folds, cases=cases,
        left_out_folds={t: sorted(set(finished[t]) - set(folds)) for t in trainers},
        left_out_cases={t: sorted(in_folds[t] - cases) for t in trainers},
    )


def describe_left_out(sel: SharedSelection, max_cases: int = 10) -> list[str]:
    """Markdown bullet lines, one per trainer that had something left out."""
    lines = []
    for t in sel.left_out_folds:
        parts = []
        if sel.left_out_folds[t]:
            parts.append(f"fold(s) {_fold_list(sel.left_out_folds[t])} (not finished by every trainer)")
        cases = sel.left_out_cases.get(t) or []
        if cases:
            shown = ", ".join(f"{c} (fold {k})" for k, c in cases[:max_cases])
            more = f" and {len(cases) - max_cases} more" if len(cases) > max_cases else ""
            parts.append(f"{len(cases)} case(s) the other trainers lack: {shown}{more}")
        if parts:
            lines.append(f"- `{t}`: left out " + "; ".join(parts) + ".")
    return lines
