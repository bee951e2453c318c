"""Kvasir-SEG (colonoscopy polyps, 1000 RGB images) -> ``$nnUNet_raw/Dataset501_KvasirSEG``.

Source: ``kvasir-seg.zip`` extracted; SOURCE may be ``Kvasir-SEG/`` or a folder above it::

    Kvasir-SEG/images/<id>.jpg   Kvasir-SEG/masks/<id>.jpg   Kvasir-SEG/kavsir_bboxes.json (ignored)

Output:

- ``imagesTr/<id>_0000.png``: the JPEG decoded once and stored losslessly as RGB PNG (nnU-Net does not read
  JPEG); ``channel_names`` R, G, B.
- ``labelsTr/<id>.png``: uint8 {0: background, 1: polyp}. The masks are lossy RGB JPEGs with ringing values
  near 0 and 255; the brightest channel is thresholded at > 127.
- Case id = the Kvasir id (25 lower-case letters and digits).

Official split (DebeshJha/Kvasir-SEG ``Data-split``): ``--splits train.txt val.txt`` -> one fold, 880/120.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import (CONVERTED_BY, DEFAULTS, DEFAULT_NUM_PROCESSES, check_same_size, check_source, list_files,
                     load_binary_mask, locate, open_image, pair_files, parallel_map, safe_id, save_label_png,
                     save_png, staged_dataset, write_dataset_json)
from .finish import announce, seal
from .splits import build_aliases, make_splits

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["kvasir"]
_SUFFIXES = (".jpg", ".jpeg", ".png")


def _is_root(path: Path) -> bool:
    return (path / "images").is_dir() and (path / "masks").is_dir()


def _convert_case(task) -> int:
    """Worker: one image/mask pair -> PNG image + {0,1} PNG label. Returns the number of polyp pixels."""
    case_id, image_path, mask_path, out = task
    image = open_image(image_path)
    mask, mask_size = load_binary_mask(mask_path)
    check_same_size(image.size, mask_size, image_path, mask_path)
    save_png(image if image.mode == "RGB" else image.convert("RGB"), Path(out) / "imagesTr" / f"{case_id}_0000.png")
    save_label_png(mask, Path(out) / "labelsTr" / f"{case_id}.png")
    return int(mask.sum())


def convert_kvasir(source, output_root=None, dataset_id: int | None = None, name: str | None = None,
                   splits=None, overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES,
                   verify: bool = False) -> Path:
    """Convert an extracted Kvasir-SEG download; returns the dataset folder. See the module docstring."""
    source = check_source(source)
    root = locate(source, _is_root, "Kvasir-SEG", "a folder with images/ and masks/ (Kvasir-SEG/)")
    images = {p.stem: p for p in list_files(root / "images", _SUFFIXES)}
    masks = {p.stem: p for p in list_files(root / "masks", _SUFFIXES)}
    if not images:
        raise UserError(f"{root / 'images'} holds no .jpg images. Point SOURCE at the extracted Kvasir-SEG "
                        f"folder.")
    pairs = pair_files(images, masks, root / "images", root / "masks", "masks/<same name>.jpg")
    # Real ids are 25 lower-case letters and digits; a renamed copy may hold spaces or dots.
    safe = {stem: safe_id(stem) for stem, _, _ in pairs}
    if len(set(safe.values())) != len(safe):
        raise UserError(f"image names in {root / 'images'} differ only in characters that cannot be used in "
                        f"nnU-Net case ids; rename them.")
    pairs = [(safe[stem], image, mask) for stem, image, mask in pairs]
    case_ids = [k for k, _, _ in pairs]
    aliases = build_aliases({safe[stem]: [stem] for stem in safe})
    folds, splits_note = make_splits(splits, case_ids, aliases, "Kvasir-SEG")

    with staged_dataset(root, output_root, DEFAULT_ID if dataset_id is None else dataset_id,
                        name or DEFAULT_NAME, overwrite) as stage:
        (stage.dir / "imagesTr").mkdir()
        (stage.dir / "labelsTr").mkdir()
        tasks = [(k, i, m, str(stage.dir)) for k, i, m in pairs]
        areas = parallel_map(_convert_case, tasks, num_processes, "Kvasir-SEG")
        write_dataset_json(stage.dir, {0: "R", 1: "G", 2: "B"}, {"background": 0, "polyp": 1}, len(pairs), ".png",
                           dataset_name=stage.name, description="Kvasir-SEG polyp segmentation",
                           reference="Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020",
                           license="Kvasir-SEG terms: research and education only",
                           converted_by=f"{CONVERTED_BY} kvasir")
        seal(stage, root, folds, {k: [i, m] for k, i, m in pairs}, verify, num_processes)
    empty = sum(1 for a in areas if a == 0)
    if empty:
        print(f"note: {empty} mask(s) hold no polyp.")
    return announce(stage, folds, len(pairs), 0, splits_note)
