"""Any folder of 2D images + a folder of masks (BUSIS, TUCC frames, your own data) -> ``$nnUNet_raw/DatasetXXX_NAME``.

``convert folder IMAGES_DIR MASKS_DIR --name NAME [--mask-suffix S] [--channels grey|rgb] [--label-map 255:1]``

- Images and masks: PNG, JPEG, BMP or TIFF (any letter case), one image per file; hidden files are ignored,
  sub-folders are not searched (point MASKS_DIR at ``masks/0`` for the CMUNeXt layout).
- Pairing: the mask of ``<stem>.<ext>`` is ``<stem><S>.<any ext>`` in MASKS_DIR (``--mask-suffix _mask`` for
  ``case1.png`` + ``case1_mask.png``; default: the same stem). With a suffix, MASKS_DIR may be IMAGES_DIR. Any
  unmatched image or mask is an error naming it. Case ids are the image stems made filesystem-safe.
- ``--channels grey`` (default: BUSI and the thyroid sources are grey): every image to one channel (``grey``); RGB
  with colour pixels is converted too, with a warning (use ``rgb`` for colour data); 16-bit grey stays 16-bit.
  ``--channels rgb``: three channels (R, G, B), grey images replicated.
- Masks, default: binary, 0/255 or 0/1 (the brightest channel of grey/RGB masks; alpha composited onto black),
  > 127 -> 1; JPEG masks are lossy and thresholded, a mostly mid-grey file is an error. ``--label-map V:L ...``
  (e.g. ``--label-map 128:1 255:2``): exact values -> labels for multi-class masks; 0 stays background unless
  mapped; any other value is an error naming the file; needs lossless masks. ``255:1`` and ``1:1`` are the
  binary default. Labels must be 1..K (nnU-Net needs consecutive labels); ``--label-names`` names them (default
  ``foreground``, or ``label_<k>``): use the source's names (``lesion``, ``nodule``, ``polyp``) for a target.
- Default ``--mode target`` (imagesTs/labelsTs, ``numTraining`` 0); ``--mode training`` for a trainable dataset
  (imagesTr/labelsTr, default 5-fold splits or ``--splits``). Default id 520 (``--dataset-id`` to change it).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from nnunet_lmnet.errors import UserError

from .common import (DEFAULTS, DEFAULT_NUM_PROCESSES, check_source, dataset_folder_name, list_files, pair_files,
                     preview, raw_root, safe_id)
from .splits import build_aliases
from .zero_shot import CHANNEL_NAMES, GREY, RGB, TARGET, Case, Meta, convert_plans, plan_dataset

DEFAULT_ID = DEFAULTS["folder"][0]
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LOSSY = (".jpg", ".jpeg")
_ENTRY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+)\s*$")


def parse_label_map(entries) -> dict[float, int] | None:
    """``["128:1", "255:2"]`` (or ``"128:1,255:2"``, or a dict) -> {128: 1, 255: 2}; None for the binary default."""
    if entries is None:
        return None
    if isinstance(entries, Mapping):
        pairs = [(float(k), int(v)) for k, v in entries.items()]
    else:
        if isinstance(entries, str):
            entries = [entries]
        pairs = []
        for text in (e for entry in entries for e in str(entry).split(",") if e.strip()):
            m = _ENTRY.match(text)
            if m is None:
                raise UserError(f"--label-map entry {text!r} is not VALUE:LABEL (e.g. 255:1).")
            pairs.append((float(m.group(1)), int(m.group(2))))
    table: dict[float, int] = {}
    for value, label in pairs:
        if value in table and table[value] != label:
            raise UserError(f"--label-map maps mask value {value:g} to both {table[value]} and {label}.")
        table[value] = label
    labels = sorted(set(table.values()) - {0})
    if not labels:
        raise UserError("--label-map maps no mask value to a label above 0, so every mask would be empty.")
    if labels != list(range(1, len(labels) + 1)):
        raise UserError(f"--label-map gives the labels {labels}; nnU-Net needs consecutive labels 1, 2, ... "
                        f"(0 is background).")
    foreground = {v: lab for v, lab in table.items() if not (v == 0 and lab == 0)}
    if len(foreground) == 1 and set(foreground.items()) <= {(255.0, 1), (1.0, 1)}:
        return None  # the binary default: 0/255 and 0/1 masks, lossy JPEG masks thresholded
    return {(int(v) if v == int(v) else v): lab for v, lab in table.items()}


def _label_names(label_map: dict | None, names: Sequence[str] | None) -> dict[str, int]:
    count = 1 if label_map is None else max(label_map.values())
    if names is None:
        names = ["foreground"] if count == 1 else [f"label_{k}" for k in range(1, count + 1)]
    names = list(names)
    if len(names) != count or len(set(names)) != count or "background" in names or not all(names):
        raise UserError(f"--label-names must give {count} distinct name(s) other than 'background' (one per label "
                        f"1..{count}), got {names!r}.")
    return {"background": 0, **{n: k for k, n in enumerate(names, start=1)}}


def _by_stem(files: Sequence[Path], folder: Path, what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise UserError(f"{folder} holds two {what} with the stem {p.stem!r} ({out[p.stem].name}, {p.name}); "
                            f"keep one of them.")
        out[p.stem] = p
    return out


def convert_folder(source, masks, name: str, output_root=None, dataset_id: int | None = None, splits=None,
                   overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES, verify: bool = False,
                   mode: str = TARGET, mask_suffix: str = "", channels: str = GREY, label_map=None,
                   label_names: Sequence[str] | None = None) -> Path:
    """Convert ``source`` (the images folder) and ``masks`` (the masks folder); returns the dataset folder. See
    the module docstring."""
    if not name:
        raise UserError("convert folder needs --name NAME (the dataset folder becomes DatasetXXX_NAME).")
    if channels not in (GREY, RGB):
        raise UserError(f"--channels must be {GREY} or {RGB}, got {channels!r}.")
    image_dir = check_source(source)
    mask_dir = check_source(masks)
    mask_suffix = mask_suffix or ""
    if image_dir == mask_dir and not mask_suffix:
        raise UserError(f"IMAGES_DIR and MASKS_DIR are both {image_dir}: give --mask-suffix (e.g. _mask) so that "
                        f"images and masks can be told apart.")
    table = parse_label_map(label_map)
    labels = _label_names(table, label_names)

    image_files = [p for p in list_files(image_dir, SUFFIXES)
                   if not (image_dir == mask_dir and p.stem.endswith(mask_suffix))]
    if not image_files:
        raise UserError(f"{image_dir} holds no images ({', '.join(SUFFIXES)}). Check that IMAGES_DIR is the folder "
                        f"with the image files (sub-folders are not searched).")
    mask_files = [p for p in list_files(mask_dir, SUFFIXES) if p.stem.endswith(mask_suffix)]
    images = _by_stem(image_files, image_dir, "images")
    masks_by_key = {stem[: len(stem) - len(mask_suffix)]: p
                    for stem, p in _by_stem(mask_files, mask_dir, "masks").items()}
    if image_dir != mask_dir:
        stray = [p.name for p in list_files(mask_dir, SUFFIXES) if not p.stem.endswith(mask_suffix)]
        if stray:
            raise UserError(f"{len(stray)} file(s) in {mask_dir} do not end with the mask suffix {mask_suffix!r}: "
                            f"{preview(stray)}. Check --mask-suffix or move them out of the folder.")
    pairs = pair_files(images, masks_by_key, image_dir, mask_dir, f"<image stem>{mask_suffix}.<png|jpg|bmp|tif>")
    if table is not None:
        lossy = [m.name for _, _, m in pairs if m.suffix.lower() in _LOSSY]
        if lossy:
            raise UserError(f"--label-map needs lossless masks, but {preview(lossy)} in {mask_dir} are JPEG (their "
                            f"values blur). Leave out --label-map for binary JPEG masks (thresholded at > 127).")
    ids = {stem: safe_id(stem) for stem, _, _ in pairs}
    if len(set(ids.values())) != len(ids):
        raise UserError(f"image names in {image_dir} differ only in characters that cannot be used in nnU-Net case "
                        f"ids; rename them.")
    cases = [Case(ids[stem], image, mask) for stem, image, mask in pairs]
    aliases = build_aliases({ids[stem]: [stem, image.name] for stem, image, _ in pairs})
    meta = Meta(channels=channels, channel_names=CHANNEL_NAMES.get(channels, {0: "grey"}), labels=labels,
                description=f"{name}: images from {image_dir.name}/, masks from {mask_dir.name}/",
                reference="see the dataset's own publication", license="see the dataset's own terms",
                converter="folder")
    dataset_id = DEFAULT_ID if dataset_id is None else dataset_id
    _check_no_overlap(mask_dir, output_root, dataset_id, name)  # staged_dataset checks IMAGES_DIR
    plan = plan_dataset(image_dir, name, cases, meta, mode, splits, aliases, dataset_id, name, label_map=table)
    plan.mapping_root = Path(os.path.commonpath([image_dir, mask_dir]))
    return convert_plans([plan], output_root, overwrite, num_processes, verify)[0]


def _check_no_overlap(mask_dir: Path, output_root, dataset_id: int, name: str) -> None:
    target = raw_root(output_root) / dataset_folder_name(dataset_id, name)
    for a, b in ((target, mask_dir), (mask_dir, target)):
        if a == b or b in a.parents:
            raise UserError(f"the output {target} and MASKS_DIR {mask_dir} overlap. The source is never modified: "
                            f"put nnUNet_raw somewhere else.")
