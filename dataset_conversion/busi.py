"""BUSI, Breast Ultrasound Images (Dataset_BUSI_with_GT) -> ``$nnUNet_raw/Dataset502_BUSI``.

Source: the Kaggle/Mendeley download extracted; SOURCE may be ``Dataset_BUSI_with_GT/`` or a folder above it::

    Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (<n>).png
                                                   <class> (<n>)_mask.png  [+ _mask_1.png, _mask_2.png]

Output:

- Cases: benign + malignant (647); ``normal`` (133 images with empty masks) only with ``--include-normal``
  (``include_normal=True``), as most papers drop it.
- Case ids are filesystem-safe: ``benign (12)`` -> ``benign_012``. Split lists may use either form.
- ``imagesTr/<case>_0000.png``: one channel (``ultrasound``), the images converted to 8-bit grey whatever their
  PNG mode (grey, RGB, RGBA, palette); ~2% of the RGB images carry colour overlays, which become grey.
  ``--rgb`` keeps three channels (R, G, B) for every image instead. Either way every case has the same channel
  count, which nnU-Net requires.
- ``labelsTr/<case>.png``: uint8 {0: background, 1: lesion}; all masks of an image (``_mask``, ``_mask_1``, ...)
  OR-merged; masks in grey, RGB or RGBA mode accepted (alpha composited onto black, then > 127).

CMUNeXt / LGMSNet splits: ``--splits busi_train1.txt busi_val1.txt busi_train2.txt ...`` -> 3 folds.
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import (CONVERTED_BY, DEFAULTS, DEFAULT_NUM_PROCESSES, check_link, check_same_size, check_source,
                     load_binary_mask, locate, open_image, parallel_map, preview, save_label_png, save_png,
                     staged_dataset, write_dataset_json)
from .finish import announce, seal
from .splits import build_aliases, make_splits

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["busi"]
CLASSES = ("benign", "malignant", "normal")

_IMAGE = re.compile(r"^(?P<cls>[a-z]+) ?\((?P<n>\d+)\)\.png$", re.IGNORECASE)
_MASK = re.compile(r"^(?P<cls>[a-z]+) ?\((?P<n>\d+)\)_mask(?:_(?P<k>\d+))?\.png$", re.IGNORECASE)


def _is_root(path: Path) -> bool:
    return (path / "benign").is_dir() and (path / "malignant").is_dir()


def case_id(cls: str, number: int) -> str:
    return f"{cls.lower()}_{number:03d}"


def _scan_class(folder: Path, cls: str) -> list[tuple[str, Path, list[Path], str]]:
    """(case id, image, masks, original name) for one class folder; names parsed, never substring-matched."""
    images: dict[int, Path] = {}
    masks: dict[int, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() != ".png":
            continue  # .DS_Store, Thumbs.db, notes: never images
        check_link(p)
        if not p.is_file():
            continue
        m_mask, m_image = _MASK.match(p.name), _IMAGE.match(p.name)
        m = m_mask or m_image
        if m is None or m.group("cls").lower() != cls:
            raise UserError(f"unexpected file {p}: BUSI files in {folder.name}/ are named '{cls} (<n>).png' and "
                            f"'{cls} (<n>)_mask.png' (or _mask_1.png, ...). Move it out of the folder.")
        n = int(m.group("n"))
        if m_mask:
            masks.setdefault(n, []).append(p)
        else:
            images[n] = p
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        raise UserError(f"{len(no_mask)} image(s) in {folder} have no mask: "
                        f"{preview(images[n].name for n in no_mask)} (expected '{cls} (<n>)_mask.png'). Restore "
                        f"the masks from the original download.")
    if no_image:
        raise UserError(f"{len(no_image)} mask(s) in {folder} have no image: "
                        f"{preview(masks[n][0].name for n in no_image)}. Restore the images or remove the stray "
                        f"masks.")
    return [(case_id(cls, n), images[n], masks[n], images[n].stem) for n in sorted(images)]


def _to_model_mode(image, rgb: bool, path: Path):
    """Every image to the same mode: 'L' (default) or 'RGB'; alpha dropped, palettes expanded."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])  # drop alpha; the overlays are not transparency
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        raise UserError(f"{path} is a 16-bit image; BUSI images are 8-bit. Replace it with the original.")
    return image.convert("RGB" if rgb else "L") if image.mode != ("RGB" if rgb else "L") else image


def _convert_case(task) -> int:
    """Worker: one image and all its masks -> PNG image + OR-merged {0,1} PNG label."""
    cid, image_path, mask_paths, out, rgb = task
    image = open_image(image_path)
    merged = None
    for mask_path in mask_paths:
        mask, size = load_binary_mask(mask_path, lossy=False)
        check_same_size(image.size, size, image_path, mask_path)
        merged = mask if merged is None else merged | mask
    save_png(_to_model_mode(image, rgb, image_path), Path(out) / "imagesTr" / f"{cid}_0000.png")
    save_label_png(merged, Path(out) / "labelsTr" / f"{cid}.png")
    return int(merged.sum())


def convert_busi(source, output_root=None, dataset_id: int | None = None, name: str | None = None, splits=None,
                 overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES, verify: bool = False,
                 include_normal: bool = False, rgb: bool = False) -> Path:
    """Convert an extracted BUSI download; returns the dataset folder. See the module docstring."""
    source = check_source(source)
    root = locate(source, _is_root, "BUSI", "Dataset_BUSI_with_GT/ with benign/ and malignant/ folders")
    classes = CLASSES if include_normal else CLASSES[:2]
    cases = []
    for cls in classes:
        folder = root / cls
        if not folder.is_dir():
            raise UserError(f"{folder} does not exist; --include-normal needs the normal/ folder of the download.")
        found = _scan_class(folder, cls)
        if not found:
            raise UserError(f"{folder} holds no '{cls} (<n>).png' images. Point SOURCE at the extracted "
                            f"Dataset_BUSI_with_GT folder.")
        cases += found
    case_ids = [c[0] for c in cases]
    aliases = build_aliases({cid: [original] for cid, _, _, original in cases})
    folds, splits_note = make_splits(splits, case_ids, aliases, "BUSI")

    with staged_dataset(root, output_root, DEFAULT_ID if dataset_id is None else dataset_id,
                        name or DEFAULT_NAME, overwrite) as stage:
        (stage.dir / "imagesTr").mkdir()
        (stage.dir / "labelsTr").mkdir()
        tasks = [(cid, img, masks, str(stage.dir), rgb) for cid, img, masks, _ in cases]
        parallel_map(_convert_case, tasks, num_processes, "BUSI")
        channels = {0: "R", 1: "G", 2: "B"} if rgb else {0: "ultrasound"}
        write_dataset_json(stage.dir, channels, {"background": 0, "lesion": 1}, len(cases), ".png",
                           dataset_name=stage.name, description="BUSI breast ultrasound lesion segmentation ("
                           + ", ".join(classes) + ")",
                           reference="Al-Dhabyani et al., Dataset of breast ultrasound images, Data in Brief 2020",
                           license="see the BUSI download page", converted_by=f"{CONVERTED_BY} busi")
        seal(stage, root, folds, {cid: [img, *masks] for cid, img, masks, _ in cases}, verify, num_processes)
    return announce(stage, folds, len(cases), 0, splits_note)
