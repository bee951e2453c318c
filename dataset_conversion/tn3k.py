"""TN3K (thyroid nodule ultrasound, 2879 trainval + 614 test images; a thyroid zero-shot target of TN-SCUI 2020)
-> ``$nnUNet_raw/Dataset509_TN3K``.

Source: the TRFE-Net download extracted; SOURCE may be ``tn3k/`` or a folder above it::

    tn3k/trainval-image/0000.jpg ... 2878.jpg     tn3k/trainval-mask/0000.jpg ...   (mask name = image name)
    tn3k/test-image/0000.jpg ... 0613.jpg         tn3k/test-mask/0000.jpg ...
    tn3k-trainval-fold0.json ... fold4.json       ({"train": [indices], "val": [indices]}: only for --splits)

- Images: JPEG -> ``TN3K_<part>_<NNNN>_0000.png``, one grey channel ``ultrasound`` (as ``convert tnscui2020`` /
  ``convert busi``); RGB-encoded JPEGs are converted to grey.
- Masks are **JPEG** too, so lossy: ringing values near 0 and 255 are thresholded at > 127 -> {0, 1: nodule}; a
  mask with many mid-grey pixels is an error (not a mask).
- Default ``--mode target``: all 3493 labelled images in imagesTs/labelsTs (``--test-only``: the 614 official
  test images only); the part stays visible in the case id (``TN3K_trainval_0000``, ``TN3K_test_0000``).
- ``--mode training``: trainval -> imagesTr/labelsTr, test -> imagesTs/labelsTs. ``--splits
  tn3k-trainval-fold0.json ...`` reads TRFE-Net's fold files, whose integer entries index the trainval images
  sorted by number (0 -> 0000.jpg); text lists or nnU-Net JSON with case ids work as for every converter.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import DEFAULTS, DEFAULT_NUM_PROCESSES, check_source, list_files, locate, pair_files, preview
from .splits import FoldSpec, build_aliases, resolve_splits
from .zero_shot import GREY, TARGET, TRAINING, Case, Meta, child_dir, convert_plans, plan_dataset

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["tn3k"]
PARTS = ("trainval", "test")
_NAME = re.compile(r"^(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)

META = Meta(channels=GREY, channel_names={0: "ultrasound"}, labels={"background": 0, "nodule": 1},
            description="TN3K thyroid nodule segmentation (zero-shot target of TN-SCUI 2020)",
            reference="Gong et al., Multi-task learning for thyroid nodule segmentation with thyroid region prior, "
                      "ISBI 2021; Gong et al., CBM 2022 (TRFE+)",
            license="see the TN3K download page (data licence not stated)", converter="tn3k",
            pairs_with="tnscui2020")


def _is_root(path: Path) -> bool:
    return any(child_dir(path, f"{part}-image") is not None for part in PARTS)


def _numbered(folder: Path) -> dict[int, Path]:
    out = {}
    for p in list_files(folder, (".jpg", ".jpeg", ".png")):
        m = _NAME.match(p.name)
        if m is None:
            raise UserError(f"unexpected file {p}: TN3K images and masks are named NNNN.jpg. Move it out of the "
                            f"folder.")
        n = int(m.group(1))
        if n in out:
            raise UserError(f"{folder} holds both {out[n].name} and {p.name}; keep one of them.")
        out[n] = p
    return out


def _part(root: Path, part: str) -> list[tuple[str, int, Path, Path]] | None:
    image_dir = child_dir(root, f"{part}-image")
    if image_dir is None:
        return None
    mask_dir = child_dir(root, f"{part}-mask")
    if mask_dir is None:
        raise UserError(f"{root} has {image_dir.name}/ but no {part}-mask/ with its masks. Extract the complete TN3K "
                        f"download.")
    images = _numbered(image_dir)
    if not images:
        raise UserError(f"{image_dir} holds no NNNN.jpg images. Extract the TN3K download again.")
    pairs = pair_files(images, _numbered(mask_dir), image_dir, mask_dir, f"{part}-mask/<same name>.jpg")
    return [(f"TN3K_{part}_{images[n].stem}", n, image, mask) for n, image, mask in pairs]


def _index_folds(paths, trainval: list[str]) -> list[FoldSpec] | None:
    """TRFE-Net's ``tn3k-trainval-fold<k>.json`` ({"train": [int], "val": [int]}) as folds of case ids; None when
    the files are not of that kind (they then go through the generic split reader)."""
    files = [Path(p).expanduser() for p in paths]
    if not all(p.suffix.lower() == ".json" and p.is_file() for p in files):
        return None
    specs = []
    for p in files:
        try:
            data = json.loads(p.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read split file {p} as JSON: {e}.") from None
        if not (isinstance(data, dict) and all(isinstance(data.get(k), list) for k in ("train", "val"))
                and all(isinstance(i, int) and not isinstance(i, bool) for k in ("train", "val") for i in data[k])):
            if specs:
                raise UserError(f"split file {p} is not a TN3K fold file like the others ({{\"train\": [indices], "
                                f"\"val\": [indices]}}).")
            return None
        bad = [i for k in ("train", "val") for i in data[k] if not 0 <= i < len(trainval)]
        if bad:
            raise UserError(f"split file {p}: indices {preview(sorted(set(bad)))} are outside the {len(trainval)} "
                            f"trainval images. Check that the fold file belongs to this TN3K download.")
        specs.append(FoldSpec(train=[trainval[i] for i in data["train"]], val=[trainval[i] for i in data["val"]],
                              files=[str(p)]))
    return specs


def convert_tn3k(source, output_root=None, dataset_id: int | None = None, name: str | None = None, splits=None,
                 overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES, verify: bool = False,
                 mode: str = TARGET, test_only: bool = False) -> Path:
    """Convert an extracted TN3K download; returns the dataset folder. See the module docstring."""
    source = check_source(source)
    root = locate(source, _is_root, "TN3K", "tn3k/ with trainval-image/ (+ trainval-mask/) and test-image/ "
                  "(+ test-mask/)")
    found = {part: _part(root, part) for part in PARTS}
    if test_only and (mode != TARGET or found["test"] is None):
        raise UserError("--test-only converts the official test part as a zero-shot target: it needs "
                        f"--mode {TARGET} and {root / 'test-image'}/.")
    parts = ("test",) if test_only else PARTS
    cases = [Case(cid, image, mask, test=(part == "test"))
             for part in parts for cid, _, image, mask in (found[part] or [])]
    trainval = [cid for cid, _, _, _ in found["trainval"] or []]  # sorted by number
    names = {cid: [image.name, image.stem, str(n)] for cid, n, image, _ in found["trainval"] or []}
    aliases = build_aliases(names)
    folds = None
    if mode == TRAINING and splits and trainval:
        specs = _index_folds(splits, trainval)
        if specs is not None:
            resolved = resolve_splits(specs, trainval, aliases, "TN3K")
            names = ", ".join(Path(p).name for p in splits)
            folds = (resolved, f"splits_final.json with {len(resolved)} fold(s) from {names}")
    plan = plan_dataset(root, "TN3K", cases, META, mode, splits, aliases,
                        DEFAULT_ID if dataset_id is None else dataset_id, name or DEFAULT_NAME, folds=folds)
    return convert_plans([plan], output_root, overwrite, num_processes, verify)[0]
