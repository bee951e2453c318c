"""ISIC 2018 Task 1 (skin lesion boundary segmentation) -> ``$nnUNet_raw/Dataset504_ISIC2018``.

Source: the challenge zips extracted side by side; SOURCE is the folder holding them (pointing at one of the
``ISIC2018_Task1*`` folders also works: its parent is used)::

    ISIC2018_Task1-2_Training_Input/ISIC_<7 digits>.jpg        (2594)
    ISIC2018_Task1_Training_GroundTruth/ISIC_<id>_segmentation.png
    ISIC2018_Task1-2_Validation_Input/ (100)   ISIC2018_Task1_Validation_GroundTruth/   (optional)
    ISIC2018_Task1-2_Test_Input/ (1000)        ISIC2018_Task1_Test_GroundTruth/         (optional)

Only ``ISIC_<id>.jpg`` images and ``ISIC_<id>_segmentation.png`` masks (any letter case) are read; LICENSE.txt,
ATTRIBUTION.txt and Task 2 ``_attribute_`` files are ignored.

Output:

- ``imagesTr/ISIC_<id>_0000.png`` (RGB, lossless), ``labelsTr/ISIC_<id>.png`` {0: background, 1: lesion}
  (0/255 masks, > 127).
- Validation and test inputs -> ``imagesTs/`` (nnU-Net never trains on them); their ground truth, when the GT
  folders are present, -> ``labelsTs/`` for your own evaluation.
- Native resolution by default, as nnU-Net trains on 2D images at their pixel size. Images are decoded one at a
  time per worker with PIL (a 6000x4000 JPEG is ~72 MB in memory), never collected into arrays.
  ``--max-size N`` (``max_size=N``) downscales every image whose longer side exceeds N pixels (JPEG DCT-domain
  reduction, then Lanczos; masks nearest-neighbour to the same size), which makes the dataset far smaller. This
  is a deviation from the challenge data: evaluate on the original resolution if you compare with the
  literature.

LGMSNet / CMUNeXt splits: ``--splits isic18_train1.txt isic18_val1.txt ...`` -> 3 folds over the training set.
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import (CONVERTED_BY, DEFAULTS, DEFAULT_NUM_PROCESSES, check_same_size, check_source, displayed_size,
                     list_files, load_binary_mask, locate, pair_files, parallel_map, preview, save_label_png, save_png,
                     staged_dataset, upright, write_dataset_json)
from .finish import announce, seal
from .splits import build_aliases, make_splits

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["isic2018"]

FOLDERS = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}
_IMAGE = re.compile(r"^ISIC_(\d+)\.jpe?g$", re.IGNORECASE)
_MASK = re.compile(r"^ISIC_(\d+)_segmentation\.png$", re.IGNORECASE)


def _child(parent: Path, name: str) -> Path | None:
    """Sub-folder by name, any letter case; a same-named folder inside it (zip extracted into its own name) is
    followed."""
    hits = [p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    if not hits:
        return None
    folder = hits[0]
    inner = _child(folder, name) if not any(p.is_file() for p in folder.iterdir()) else None
    return inner or folder


def _is_root(path: Path) -> bool:
    return _child(path, FOLDERS["train"][0]) is not None


def _files(folder: Path, pattern: re.Pattern) -> dict[str, Path]:
    out = {}
    for p in list_files(folder, (".jpg", ".jpeg", ".png")):
        m = pattern.match(p.name)
        if m:
            out[f"ISIC_{m.group(1)}"] = p
    return out


def target_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """``size`` scaled so that its longer side is at most ``max_size`` (unchanged when it already is)."""
    w, h = size
    if not max_size or max(w, h) <= max_size:
        return size
    scale = max_size / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _convert_case(task) -> None:
    """Worker: one JPEG (+ mask) -> RGB PNG (+ {0,1} PNG), optionally downscaled, one image in memory."""
    from PIL import Image

    cid, image_path, mask_path, images_dir, labels_dir, max_size = task
    try:
        image = Image.open(image_path)  # reads the header only
        size = displayed_size(image)  # after its EXIF orientation, as for the mask (common.upright)
        stored_size = image.size
    except Exception as e:
        raise UserError(f"cannot read {image_path}: {e}. The file is corrupt or not an image; extract it again "
                        f"from the original download.") from None
    mask = None
    if mask_path is not None:
        mask, mask_size = load_binary_mask(Path(mask_path), lossy=False)
        check_same_size(size, mask_size, image_path, mask_path)
    new_size = target_size(size, max_size)
    try:
        if new_size != size and image.format == "JPEG":
            # the decoder reduces by 1/2..1/8 while decoding: little memory; it works on the stored orientation
            image.draft("RGB", new_size if stored_size == size else new_size[::-1])
        image.load()
    except Exception as e:
        raise UserError(f"cannot read {image_path}: {e}. The file is corrupt or truncated; extract it again "
                        f"from the original download.") from None
    image = upright(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != new_size:
        image = image.resize(new_size, Image.Resampling.LANCZOS)
    save_png(image, Path(images_dir) / f"{cid}_0000.png")
    if mask is not None:
        if new_size != size:
            import numpy as np

            mask = np.asarray(Image.fromarray(mask).resize(new_size, Image.Resampling.NEAREST))
        save_label_png(mask, Path(labels_dir) / f"{cid}.png")


def convert_isic2018(source, output_root=None, dataset_id: int | None = None, name: str | None = None,
                     splits=None, overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES,
                     verify: bool = False, max_size: int | None = None) -> Path:
    """Convert the extracted ISIC 2018 Task 1 folders; returns the dataset folder. See the module docstring."""
    source = check_source(source)
    known = {n.lower() for pair in FOLDERS.values() for n in pair}
    if source.name.lower() in known:
        source = source.parent  # the user pointed at one of the challenge folders
    root = locate(source, _is_root, "ISIC 2018 Task 1", f"a folder holding {FOLDERS['train'][0]}/", max_depth=1)
    if max_size is not None and (not isinstance(max_size, int) or max_size < 16):
        raise UserError(f"--max-size must be an integer of at least 16 pixels, got {max_size!r}.")

    train_in = _child(root, FOLDERS["train"][0])
    train_gt = _child(root, FOLDERS["train"][1])
    if train_gt is None:
        raise UserError(f"{root} has {train_in.name}/ but no {FOLDERS['train'][1]}/ with the training masks. "
                        f"Extract ISIC2018_Task1_Training_GroundTruth.zip next to it.")
    images = _files(train_in, _IMAGE)
    if not images:
        raise UserError(f"{train_in} holds no ISIC_<id>.jpg images. Extract "
                        f"ISIC2018_Task1-2_Training_Input.zip again.")
    pairs = pair_files(images, _files(train_gt, _MASK), train_in, train_gt, "ISIC_<id>_segmentation.png")

    test_cases = []  # (case id, image, mask or None)
    for part in ("val", "test"):
        folder_in = _child(root, FOLDERS[part][0])
        if folder_in is None:
            continue
        part_images = _files(folder_in, _IMAGE)
        folder_gt = _child(root, FOLDERS[part][1])
        if folder_gt is not None:
            part_cases = pair_files(part_images, _files(folder_gt, _MASK), folder_in, folder_gt,
                                    "ISIC_<id>_segmentation.png")
        else:
            part_cases = [(k, p, None) for k, p in sorted(part_images.items())]
        test_cases += part_cases
    clash = sorted({k for k, _, _ in pairs} & {k for k, _, _ in test_cases})
    if clash or len({k for k, _, _ in test_cases}) != len(test_cases):
        raise UserError(f"the same ISIC id appears in more than one of the training/validation/test folders "
                        f"({preview(clash) or 'validation and test'}). Check the extracted folders.")

    case_ids = [k for k, _, _ in pairs]
    aliases = build_aliases({k: [m.stem] for k, _, m in pairs})
    folds, splits_note = make_splits(splits, case_ids, aliases, "ISIC 2018")

    with staged_dataset(root, output_root, DEFAULT_ID if dataset_id is None else dataset_id,
                        name or DEFAULT_NAME, overwrite) as stage:
        out = stage.dir
        for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if test_cases else ()):
            (out / sub).mkdir()
        if any(m is not None for _, _, m in test_cases):
            (out / "labelsTs").mkdir()
        tasks = [(k, i, m, str(out / "imagesTr"), str(out / "labelsTr"), max_size) for k, i, m in pairs]
        tasks += [(k, i, m, str(out / "imagesTs"), str(out / "labelsTs"), max_size) for k, i, m in test_cases]
        parallel_map(_convert_case, tasks, num_processes, "ISIC 2018")
        resized = f", images downscaled to at most {max_size} px per side" if max_size else ""
        write_dataset_json(out, {0: "R", 1: "G", 2: "B"}, {"background": 0, "lesion": 1}, len(pairs), ".png",
                           dataset_name=stage.name,
                           description=f"ISIC 2018 Task 1 lesion boundary segmentation{resized}",
                           reference="Codella et al. 2019 (arXiv:1902.03368); Tschandl et al. 2018 (HAM10000)",
                           license="ISIC 2018 challenge data: CC BY-NC 4.0, attribution per ATTRIBUTION.txt",
                           converted_by=f"{CONVERTED_BY} isic2018")
        mapping = {k: [p for p in (i, m) if p is not None] for k, i, m in pairs + test_cases}
        seal(stage, root, folds, mapping, verify, num_processes)
    return announce(stage, folds, len(pairs), len(test_cases), splits_note)
