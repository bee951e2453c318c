"""Cross-validation splits for converted datasets: ``splits_final.json`` in nnU-Net's format.

Where it goes
-------------
``$nnUNet_raw/DatasetXXX_Name/splits_final.json``. nnU-Net (>= 2.3.1) copies it into
``$nnUNet_preprocessed/DatasetXXX_Name/`` during ``nnUNetv2_plan_and_preprocess``, so it survives re-planning and
travels with the raw data. If a different ``splits_final.json`` already sits in the preprocessed folder, nnU-Net
refuses to plan; the converter warns about that case.

Default (no ``--splits``)
-------------------------
Deterministic 5-fold cross-validation over the training cases, grouped by patient where a patient has several
cases (LGG: all slices or volumes of one patient fall into the same fold). Groups are sorted, shuffled with a
fixed seed (12345, as nnU-Net) and dealt round-robin to the folds. With fewer than 5 groups there are as many
folds as groups; with a single group no file is written (nnU-Net then falls back to its own split).

``--splits FILE ...`` (published split lists)
---------------------------------------------
- **nnU-Net JSON** (a file ending in ``.json``): a list of ``{"train": [...], "val": [...]}`` folds (or a single
  such object). It passes through after every id has been resolved. Any number of folds.
- **Text lists**: one case id per line (LF, CRLF or CR; blank lines and ``#`` comments ignored; ids may be
  given as file names or paths, e.g. ``images/x.png``). The role of a file comes from a word in its name
  (any case, delimited by non-letters): ``train``/``training``/``trainset``/``trainval``;
  ``val``/``valid``/``validation``/``valset``; ``test``/``testing``/``testset``. Files whose names are equal once
  that word is removed form one fold, in the order first given on the command line:
  ``busi_train1.txt busi_val1.txt busi_train2.txt busi_val2.txt`` -> 2 folds; ``trainset.txt valset.txt`` -> 1 fold.
  - train + val: as given (they must not overlap; cases in neither are left out of that fold, with a note).
  - val (or test) alone: those ids are the validation set, every other training case trains
    (e.g. TransUNet's ``test_vol.txt`` -> BTCV 18/12); several give several folds (``fold1_val.txt`` ...).
  - train alone: every other training case validates.
  - train + test: the test ids validate (``trainval.txt test.txt``).
  - train + val + test: the test ids are held out of that fold (in neither list).
  - Ambiguous names are errors that say how to rename: a file without a role word (train list or validation
    list?), ``trainval`` next to a ``val`` list, or train-only and val-only files that do not pair up.
  - A fold that validates on more cases than it trains on gets a warning (usually swapped roles).
- **Ids**: the converter maps original names to nnU-Net case ids (``benign (12)`` -> ``benign_012``,
  ``case0008`` -> ``BTCV_0008``, an LGG patient folder -> all its slices). Matching ignores case, folders and
  file extensions. An id that is not a training case of the converted dataset is an error naming the file.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from nnunet_lmnet.errors import UserError

from .common import preview, write_json

DEFAULT_NUM_FOLDS = 5
DEFAULT_SEED = 12345

# The spellings of published split lists: busi_train1, isic18_val1, train/val (Kvasir-SEG), test_vol (TransUNet),
# trainset/valset, VOC-style trainval (train + val together) and testset.
_ROLE_WORD = re.compile(r"(?<![a-z])(trainval|train(?:ing)?(?:set)?|val(?:id(?:ation)?)?(?:set)?|test(?:ing)?(?:set)?)"
                        r"(?![a-z])", re.IGNORECASE)
_NAMING_HINT = ("Name split lists with a role word: <name>_train.txt / <name>_val.txt for one fold (trainset, "
                "trainval, valset, test and testset work too), <name>_train1.txt / <name>_val1.txt ... for several "
                "folds, or fold1_val.txt, fold2_val.txt ... for validation lists whose rest trains.")


def _role(word: str) -> str:
    word = word.lower()
    return "train" if word.startswith("train") else "val" if word.startswith("val") else "test"

_EXTENSIONS = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npz", ".npy", ".b2nd",
               ".mha", ".nrrd")


@dataclass
class FoldSpec:
    """One fold as read from the user's files, ids not yet resolved. ``None`` = 'the rest'."""
    train: list[str] | None = None
    val: list[str] | None = None
    held_out: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ reading

def _read_id_list(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise UserError(f"cannot read split file {path}: {e}.") from None
    except UnicodeDecodeError:
        raise UserError(f"split file {path} is not a UTF-8 text file with one case id per line.") from None
    ids = []
    for line in text.splitlines():  # splitlines handles LF, CRLF and CR
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line)
    if not ids:
        raise UserError(f"split file {path} holds no case ids.")
    return ids


def _read_json_folds(path: Path) -> list[FoldSpec]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read split file {path} as JSON: {e}.") from None
    if isinstance(data, dict):
        data = [data]
    ok = isinstance(data, list) and data and all(
        isinstance(f, dict) and set(f) >= {"train", "val"}
        and all(isinstance(f[k], list) and all(isinstance(i, str) for i in f[k]) for k in ("train", "val"))
        for f in data)
    if not ok:
        raise UserError(f"split file {path} is not in nnU-Net's splits_final.json format: expected a list of "
                        f'{{"train": [ids], "val": [ids]}} objects.')
    return [FoldSpec(train=list(f["train"]), val=list(f["val"]), files=[str(path)]) for f in data]


def read_split_files(paths: Sequence) -> list[FoldSpec]:
    """Parse ``--splits`` files into folds (see the module docstring for the rules)."""
    paths = [Path(p).expanduser() for p in paths]
    for p in paths:
        if not p.is_file():
            raise UserError(f"split file {p} does not exist.")
    json_files = [p for p in paths if p.suffix.lower() == ".json"]
    if json_files:
        if len(json_files) != len(paths):
            raise UserError("give either one nnU-Net splits JSON file or text id lists to --splits, not both.")
        return [fold for p in json_files for fold in _read_json_folds(p)]

    groups: dict[str, dict[str, Path]] = {}
    for p in paths:
        words = _ROLE_WORD.findall(p.stem)
        roles = {_role(w) for w in words}
        if not roles:
            raise UserError(f"cannot tell whether split file {p} is a training or a validation list: its name has "
                            f"no role word. {_NAMING_HINT}")
        if len(roles) > 1:
            raise UserError(f"cannot tell which ids split file {p.name} holds: its name contains "
                            f"{' and '.join(sorted(set(words)))}. Rename it so that it names one of "
                            f"train / val / test.")
        role = roles.pop()
        key = str(p.parent / _ROLE_WORD.sub("{}", p.stem, count=1).lower())
        slot = groups.setdefault(key, {})
        if role in slot:
            raise UserError(f"split files {slot[role].name} and {p.name} both look like the {role} list of the "
                            f"same fold. Rename one of them, or pass them in separate runs.")
        slot[role] = p
    _check_roles_pair_up(list(groups.values()))

    folds = []
    for slot in groups.values():
        train = _read_id_list(slot["train"]) if "train" in slot else None
        val = _read_id_list(slot["val"]) if "val" in slot else None
        test = _read_id_list(slot["test"]) if "test" in slot else []
        if val is None and test:
            val, test = test, []
        folds.append(FoldSpec(train=train, val=val, held_out=test, files=[str(p) for p in slot.values()]))
    return folds


def _check_roles_pair_up(slots: list[dict[str, Path]]) -> None:
    """Refuse file sets whose folds cannot be what the user meant."""
    for slot in slots:
        if "train" in slot and "val" in slot and "trainval" in slot["train"].stem.lower():
            raise UserError(f"split files {slot['train'].name} and {slot['val'].name}: a trainval list usually "
                            f"holds the val cases too, so the fold is ambiguous. Give {slot['train'].name} with a "
                            f"test list (trainval.txt test.txt), or train.txt with val.txt.")
    train_only = [s["train"].name for s in slots if set(s) == {"train"}]
    no_train = [p.name for s in slots if "train" not in s for p in s.values()]
    if train_only and no_train:
        raise UserError(f"split files {preview(train_only)} (train) and {preview(no_train)} (val/test) do not pair "
                        f"up into folds: the files of one fold must have the same name apart from the role word "
                        f"(e.g. busi_train1.txt and busi_val1.txt). {_NAMING_HINT}")


# ---------------------------------------------------------------------------------------------------- resolving

def normalise_id(entry: str) -> str:
    """Lower-case base name without a known image extension: ``images/ABC.png`` -> ``abc``."""
    name = entry.strip().strip("\"'").replace("\\", "/").rsplit("/", 1)[-1].lower()
    for ext in _EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def build_aliases(names: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """``{case_id: [other names]}`` -> lookup table ``normalised name -> case ids``.

    A name may stand for several cases (an LGG patient for all its slices).
    """
    table: dict[str, list[str]] = {}
    for case, others in names.items():
        for alias in (case, *others):
            bucket = table.setdefault(normalise_id(alias), [])
            if case not in bucket:
                bucket.append(case)
    return {k: tuple(v) for k, v in table.items()}


def _resolve_list(ids: Sequence[str], aliases: Mapping[str, tuple[str, ...]], files: Sequence[str],
                  dataset: str) -> set[str]:
    out: set[str] = set()
    unknown = []
    for entry in ids:
        cases = aliases.get(normalise_id(entry))
        if cases is None:
            unknown.append(entry)
        else:
            out.update(cases)
    if unknown:
        raise UserError(f"split file {' / '.join(files)}: {len(unknown)} id(s) are not training cases of the "
                        f"converted {dataset} dataset: {preview(unknown)}. Check that the list belongs to this "
                        f"dataset and to the same case selection (e.g. --include-normal).")
    return out


def resolve_splits(specs: Sequence[FoldSpec], case_ids: Sequence[str], aliases: Mapping[str, tuple[str, ...]],
                   dataset: str, groups: Mapping[str, str] | None = None) -> list[dict]:
    """Turn parsed split files into nnU-Net folds of case ids, checking every id and every fold."""
    all_cases = set(case_ids)
    folds = []
    for k, spec in enumerate(specs):
        train = _resolve_list(spec.train, aliases, spec.files, dataset) if spec.train is not None else None
        val = _resolve_list(spec.val, aliases, spec.files, dataset) if spec.val is not None else None
        held = _resolve_list(spec.held_out, aliases, spec.files, dataset)
        if train is None:
            train = all_cases - val - held
        if val is None:
            val = all_cases - train - held
        for a_name, a, b_name, b in (("train", train, "val", val), ("train", train, "test", held),
                                     ("val", val, "test", held)):
            both = a & b
            if both:
                raise UserError(f"split file(s) {' / '.join(spec.files)}: {len(both)} case(s) are in both the "
                                f"{a_name} and the {b_name} list: {preview(sorted(both))}.")
        if not train or not val:
            empty = "training" if not train else "validation"
            raise UserError(f"split file(s) {' / '.join(spec.files)} leave fold {k} with an empty {empty} set.")
        if len(val) > len(train):
            print(f"warning: fold {k} ({' / '.join(Path(f).name for f in spec.files)}) validates on {len(val)} "
                  f"case(s) but trains on only {len(train)}. If the lists' roles are swapped, rename the files "
                  f"(the training list needs 'train' in its name, the validation list 'val').")
        unused = all_cases - train - val - held
        if unused:
            print(f"note: fold {k} ({' / '.join(Path(f).name for f in spec.files)}) uses {len(unused)} case(s) "
                  f"neither for training nor for validation.")
        if groups:
            mixed = {groups[c] for c in train} & {groups[c] for c in val}
            if mixed:
                print(f"warning: fold {k} puts cases of the same patient into train and val "
                      f"({len(mixed)} patient(s), e.g. {preview(sorted(mixed), 3)}); validation scores will be "
                      f"optimistic.")
        folds.append({"train": sorted(train), "val": sorted(val)})
    return folds


# ------------------------------------------------------------------------------------------------------ default

def default_splits(case_ids: Sequence[str], groups: Mapping[str, str] | None = None,
                   num_folds: int = DEFAULT_NUM_FOLDS, seed: int = DEFAULT_SEED) -> list[dict]:
    """Deterministic k-fold over patients (``groups``: case -> patient; default: each case its own patient)."""
    import numpy as np

    groups = groups or {c: c for c in case_ids}
    members: dict[str, list[str]] = {}
    for c in sorted(case_ids):
        members.setdefault(groups[c], []).append(c)
    order = sorted(members)
    # The legacy RandomState stream is frozen by numpy: the same folds on every version.
    order = [order[i] for i in np.random.RandomState(seed).permutation(len(order))]
    n = min(num_folds, len(order))
    if n < 2:
        return []
    folds = []
    for k in range(n):
        val_groups = set(order[k::n])
        val = sorted(c for g in val_groups for c in members[g])
        train = sorted(c for g in order if g not in val_groups for c in members[g])
        folds.append({"train": train, "val": val})
    return folds


def make_splits(split_files: Sequence | None, case_ids: Sequence[str], aliases: Mapping[str, tuple[str, ...]],
                dataset: str, groups: Mapping[str, str] | None = None) -> tuple[list[dict], str]:
    """The folds to write and a short description for the summary line. Raises before any output is written."""
    if split_files:
        specs = read_split_files(split_files)
        folds = resolve_splits(specs, case_ids, aliases, dataset, groups)
        names = ", ".join(Path(p).name for p in split_files)
        return folds, f"splits_final.json with {len(folds)} fold(s) from {names}"
    folds = default_splits(case_ids, groups)
    if not folds:
        return [], "no splits_final.json (a single patient cannot be cross-validated)"
    grouped = " grouped by patient" if groups and len(set(groups.values())) < len(case_ids) else ""
    return folds, f"splits_final.json with {len(folds)} default fold(s){grouped}"


def write_splits(folder: Path, folds: list[dict]) -> None:
    if folds:
        write_json(folder / "splits_final.json", folds)


def warn_if_preprocessed_differs(folder_name: str, folds: list[dict]) -> None:
    """nnU-Net asserts that raw and preprocessed splits agree; say so now rather than at planning time."""
    pre = os.environ.get("nnUNet_preprocessed")
    if not pre or not folds:
        return
    existing = Path(pre) / folder_name / "splits_final.json"
    if not existing.is_file():
        return
    try:
        old = json.loads(existing.read_text())
        same = len(old) >= len(folds) and all(
            set(old[i]["train"]) == set(f["train"]) and set(old[i]["val"]) == set(f["val"])
            for i, f in enumerate(folds))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        same = False
    if not same:
        print(f"warning: {existing} holds different splits; nnU-Net will refuse to plan until you delete it.")
