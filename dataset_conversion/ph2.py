"""PH2 (dermoscopy, 200 images; ISIC 2018 -> PH2 zero-shot target) -> ``$nnUNet_raw/Dataset510_PH2``.

Source: ``PH2Dataset.rar`` extracted; SOURCE may be ``PH2Dataset/``, the folder above it, or the images folder::

    PH2Dataset/PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp
                                        /IMD002_lesion/IMD002_lesion.bmp
                                        /IMD002_roi/IMD002_R1_Label4.bmp     (colour-class masks: ignored)
    PH2Dataset/PH2_dataset.txt, PH2_dataset.xlsx, Readme.txt                  (ignored)

The images folder may also be spelled ``PH2_Dataset_images`` / ``PH2 Dataset Images`` (any case). The flat
MADGNet/U-Bench copy (``images/IMD002.bmp`` + ``masks/IMD002_lesion.bmp`` [+ ``test_frame.csv``]) works too.

- Only ``<ID>_lesion.bmp`` is the lesion mask: the ``_roi/`` colour-class masks and ``_lesion.jpg`` copies that some
  mirrors add are never read. IDs are ``IMD`` + digits (200, not contiguous: IMD002 ... IMD437).
- Images: 24-bit RGB BMP of varying size (761-769 x 553-577) -> ``<ID>_0000.png`` RGB (3 channels, R/G/B as
  ``convert isic2018``). Masks: 1-bit BMP, one (IMD002) 24-bit RGB 0/255 -> ``PH2_<ID>.png`` {0, 1: lesion}.
- Default ``--mode target``: all 200 in imagesTs/labelsTs (the zero-shot protocol uses every image);
  ``--mode training`` gives imagesTr/labelsTr with default 5-fold splits (or ``--splits``).
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import DEFAULTS, DEFAULT_NUM_PROCESSES, check_source, list_files, locate, pair_files, preview
from .splits import build_aliases
from .zero_shot import CHANNEL_NAMES, RGB, TARGET, Case, Meta, child_dir, convert_plans, plan_dataset

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["ph2"]
_IMAGES_DIR = re.compile(r"^ph2[ _]dataset[ _]images$", re.IGNORECASE)
_CASE = re.compile(r"^IMD\d+$", re.IGNORECASE)

META = Meta(channels=RGB, channel_names=CHANNEL_NAMES[RGB], labels={"background": 0, "lesion": 1},
            description="PH2 dermoscopy lesion segmentation (zero-shot target of ISIC 2018)",
            reference="Mendonca et al., PH2 - A dermoscopic image database for research and benchmarking, EMBC 2013",
            license="PH2 terms (ADDI project, Univ. Porto): research use, not redistributable",
            converter="ph2", pairs_with="isic2018")


def _images_dir(path: Path) -> Path | None:
    hits = [p for p in sorted(path.iterdir()) if p.is_dir() and _IMAGES_DIR.match(p.name)] if path.is_dir() else []
    return hits[0] if hits else None


def _is_flat(path: Path) -> bool:
    images = child_dir(path, "images")
    return (images is not None and child_dir(path, "masks") is not None
            and any(_CASE.match(p.stem) for p in list_files(images, (".bmp",))))


def _holds_case_folders(path: Path) -> bool:
    """SOURCE is the images folder itself: IMDnnn/ folders with their _Dermoscopic_Image/ inside."""
    return any(p.is_dir() and _CASE.match(p.name) and child_dir(p, f"{p.name}_Dermoscopic_Image")
               for p in path.iterdir())


def _is_root(path: Path) -> bool:
    return _images_dir(path) is not None or _is_flat(path) or _holds_case_folders(path)


def _one_file(folder: Path | None, name: str) -> Path | None:
    """``folder/name`` in any letter case (BMP only), or None."""
    if folder is None:
        return None
    hits = [p for p in list_files(folder, (".bmp",)) if p.name.lower() == name.lower()]
    return hits[0] if hits else None


def _nested_cases(images_dir: Path) -> list[tuple[str, Path, Path]]:
    cases, no_image, no_mask = [], [], []
    for folder in sorted(images_dir.iterdir()):
        if not folder.is_dir() or not _CASE.match(folder.name):
            continue
        cid = folder.name.upper()
        image = _one_file(child_dir(folder, f"{cid}_Dermoscopic_Image"), f"{cid}.bmp")
        mask = _one_file(child_dir(folder, f"{cid}_lesion"), f"{cid}_lesion.bmp")
        if image is None:
            no_image.append(f"{folder.name}/{cid}_Dermoscopic_Image/{cid}.bmp")
        elif mask is None:
            no_mask.append(f"{folder.name}/{cid}_lesion/{cid}_lesion.bmp")
        else:
            cases.append((cid, image, mask))
    if no_image:
        raise UserError(f"{len(no_image)} PH2 case folder(s) in {images_dir} have no image: {preview(no_image)} "
                        f"missing. Extract PH2Dataset.rar again.")
    if no_mask:
        raise UserError(f"{len(no_mask)} PH2 image(s) in {images_dir} have no mask: {preview(no_mask)} missing. "
                        f"Restore the lesion masks from the original download.")
    return cases


def _flat_cases(root: Path) -> list[tuple[str, Path, Path]]:
    image_dir, mask_dir = child_dir(root, "images"), child_dir(root, "masks")
    images = {p.stem.upper(): p for p in list_files(image_dir, (".bmp",)) if _CASE.match(p.stem)}
    masks = {p.stem[: -len("_lesion")].upper(): p for p in list_files(mask_dir, (".bmp",))
             if p.stem.lower().endswith("_lesion") and _CASE.match(p.stem[: -len("_lesion")])}
    return pair_files(images, masks, image_dir, mask_dir, "masks/<ID>_lesion.bmp")


def convert_ph2(source, output_root=None, dataset_id: int | None = None, name: str | None = None, splits=None,
                overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES, verify: bool = False,
                mode: str = TARGET) -> Path:
    """Convert an extracted PH2 download; returns the dataset folder. See the module docstring."""
    source = check_source(source)
    root = locate(source, _is_root, "PH2", "'PH2 Dataset images/IMDnnn/...' (PH2Dataset/) or images/ + masks/ "
                  "with IMDnnn.bmp files")
    images_dir = _images_dir(root) or (None if _is_flat(root) else root)
    found = _nested_cases(images_dir) if images_dir is not None else _flat_cases(root)
    if not found:
        raise UserError(f"{images_dir or root} holds no PH2 cases (IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp). "
                        f"Point SOURCE at the extracted PH2Dataset folder.")
    cases = [Case(f"PH2_{cid}", image, mask) for cid, image, mask in found]
    aliases = build_aliases({f"PH2_{cid}": [cid, image.name, mask.name] for cid, image, mask in found})
    plan = plan_dataset(root, "PH2", cases, META, mode, splits, aliases,
                        DEFAULT_ID if dataset_id is None else dataset_id, name or DEFAULT_NAME)
    return convert_plans([plan], output_root, overwrite, num_processes, verify)[0]
