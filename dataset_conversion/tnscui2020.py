"""TN-SCUI 2020 (thyroid nodule ultrasound, 3644 training images; source of the TN-SCUI -> TUCC zero-shot test)
-> ``$nnUNet_raw/Dataset508_TNSCUI2020``.

Source: the challenge archives extracted; SOURCE may be ``TNSCUI2020_train/`` or a folder holding it (and, then
optionally, ``tnscui2020_testset/``)::

    TNSCUI2020_train/image/<ID>.PNG    (3644; IDs are integers 2 ... 9767, not contiguous; upper-case .PNG)
    TNSCUI2020_train/mask/<ID>.PNG     (0/255)
    TNSCUI2020_train/train.csv         (ID, CATE benign/malignant: not needed for segmentation, ignored)
    tnscui2020_testset/test_<n>.PNG    (910 test images, no masks released; optional)

- File names match in any letter case (``.PNG``/``.png``); a PNG in ``image/`` or ``mask/`` whose name is not an
  integer is an error (a renamed or stray file would otherwise be dropped silently).
- Images: 8-bit grey -> ``TNSCUI_<ID>_0000.png``, one channel ``ultrasound`` (as ``convert busi``); RGB copies are
  converted to grey. The black borders and UI regions stay (nnU-Net crops nothing; the winning team's crop is a
  model choice). Masks -> ``TNSCUI_<ID>.png`` {0, 1: nodule}.
- Default ``--mode training``: imagesTr/labelsTr; the test images, if found under SOURCE, -> imagesTs
  (``TNSCUI_test_<n>_0000.png``, no labels). ``--mode target``: the 3644 labelled images -> imagesTs/labelsTs
  (the unlabelled test images are left out).

LGMSNet splits: ``--splits tuscui_train1.txt tuscui_val1.txt ... tuscui_val3.txt`` -> 3 folds (2550/1094; bare
integer IDs, CRLF).
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import DEFAULTS, DEFAULT_NUM_PROCESSES, check_source, list_files, locate, pair_files, preview
from .splits import build_aliases
from .zero_shot import GREY, TRAINING, Case, Meta, child_dir, convert_plans, find_dirs, plan_dataset

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["tnscui2020"]
_ID = re.compile(r"^(\d+)\.png$", re.IGNORECASE)
_TEST = re.compile(r"^test_(\d+)\.png$", re.IGNORECASE)

META = Meta(channels=GREY, channel_names={0: "ultrasound"}, labels={"background": 0, "nodule": 1},
            description="TN-SCUI 2020 thyroid nodule segmentation (training set)",
            reference="TN-SCUI 2020 challenge, MICCAI 2020 (https://tn-scui2020.grand-challenge.org/)",
            license="TN-SCUI 2020 challenge terms: research use, no redistribution", converter="tnscui2020")


def _is_root(path: Path) -> bool:
    return child_dir(path, "image") is not None and child_dir(path, "mask") is not None


def _numbered(folder: Path, what: str) -> dict[int, Path]:
    out = {}
    for p in list_files(folder, (".png",)):
        m = _ID.match(p.name)
        if m is None:
            raise UserError(f"unexpected file {p}: TN-SCUI 2020 {what} are named <ID>.PNG with an integer ID. Move "
                            f"it out of the folder.")
        n = int(m.group(1))
        if n in out:
            raise UserError(f"{folder} holds both {out[n].name} and {p.name} for ID {n}; keep one of them.")
        out[n] = p
    return out


def _test_images(source: Path) -> list[tuple[int, Path]]:
    def holds_tests(p: Path) -> bool:
        return any(_TEST.match(f.name) for f in list_files(p, (".png",)))

    folders = find_dirs(source, holds_tests)
    if len(folders) > 1:
        raise UserError(f"SOURCE {source} holds several folders with test_<n>.PNG images ({preview(folders)}). "
                        f"Keep one tnscui2020_testset/.")
    if not folders:
        return []
    return sorted((int(m.group(1)), p) for p in list_files(folders[0], (".png",)) if (m := _TEST.match(p.name)))


def convert_tnscui2020(source, output_root=None, dataset_id: int | None = None, name: str | None = None,
                       splits=None, overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES,
                       verify: bool = False, mode: str = TRAINING) -> Path:
    """Convert the extracted TN-SCUI 2020 training (and test) data; returns the dataset folder. See the module
    docstring."""
    source = check_source(source)
    root = locate(source, _is_root, "TN-SCUI 2020", "TNSCUI2020_train/ with image/ and mask/ folders")
    image_dir, mask_dir = child_dir(root, "image"), child_dir(root, "mask")
    images, masks = _numbered(image_dir, "images"), _numbered(mask_dir, "masks")
    if not images:
        raise UserError(f"{image_dir} holds no <ID>.PNG images. Point SOURCE at the extracted TNSCUI2020_train "
                        f"folder.")
    pairs = pair_files(images, masks, image_dir, mask_dir, "mask/<ID>.PNG")  # sorted by integer ID
    tests = _test_images(source) if source != root else []  # the test set sits beside TNSCUI2020_train/
    base = source if tests else root
    cases = [Case(f"TNSCUI_{n}", image, mask) for n, image, mask in pairs]
    cases += [Case(f"TNSCUI_test_{n}", image, None, test=True) for n, image in tests]
    aliases = build_aliases({f"TNSCUI_{n}": [str(n)] for n, _, _ in pairs})
    plan = plan_dataset(base, "TN-SCUI 2020", cases, META, mode, splits, aliases,
                        DEFAULT_ID if dataset_id is None else dataset_id, name or DEFAULT_NAME)
    return convert_plans([plan], output_root, overwrite, num_processes, verify)[0]
