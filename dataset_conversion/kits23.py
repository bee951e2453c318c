"""KiTS23 (kidney, tumour and cyst CT) -> ``$nnUNet_raw/Dataset506_KiTS23``.

Source: a clone of ``neheller/kits23`` after ``kits23_download_data``; SOURCE may be the clone or its
``dataset/`` folder::

    dataset/case_00000/imaging.nii.gz        (downloaded separately; missing while the download is incomplete)
    dataset/case_00000/segmentation.nii.gz   (tracked in git)
    dataset/case_00000/instances/*.nii.gz    (per-annotator masks: ignored)
    dataset/kits23.json                      (clinical metadata: ignored)

Output, following nnU-Net's own ``Dataset220_KiTS2023`` conversion:

- ``imagesTr/case_00000_0000.nii.gz`` (channel ``CT``) and ``labelsTr/case_00000.nii.gz``, copied byte for byte
  after checks (readable, complete gzip stream, equal shape, spacing, direction and origin, labels within 0..3).
- Region-based labels: ``{"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}`` with
  ``regions_class_order`` ``[1, 3, 2]`` (kidney, then cyst where masses, then tumour), so nnU-Net trains
  three sigmoid heads (kidney+masses, masses, tumour), as the KiTS23 challenge evaluates.
- ``overwrite_image_reader_writer: NibabelIOWithReorient``: KiTS23 stores arrays as (Z, Y, X) with an
  ('I', 'P', 'L') affine; this nnU-Net reader reorients to RAS on reading and restores the original affine when
  writing predictions, so no array is transposed here.

Partial downloads: cases without ``imaging.nii.gz`` (or without ``segmentation.nii.gz``) are listed in an
error; ``--skip-incomplete`` (``skip_incomplete=True``) converts the complete cases and prints the list instead.
Leftover ``.partial.imaging.nii.gz`` files of an interrupted download are never used.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import (CONVERTED_BY, DEFAULTS, DEFAULT_NUM_PROCESSES, check_gzip_stream, check_link,
                     check_same_geometry, check_source, label_values, load_nifti_header, locate, parallel_map, preview,
                     staged_dataset, write_dataset_json)
from .finish import announce, seal
from .splits import build_aliases, make_splits

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["kits23"]
LABELS = {"background": 0, "kidney": (1, 2, 3), "masses": (2, 3), "tumor": 2}
REGIONS_CLASS_ORDER = (1, 3, 2)
READER_WRITER = "NibabelIOWithReorient"

_CASE = re.compile(r"^case_(\d{5})$")


def _is_root(path: Path) -> bool:
    return any(_CASE.match(p.name) for p in path.iterdir() if p.is_dir())


def _convert_case(task) -> list[int]:
    """Worker: check one case and copy its imaging and segmentation byte for byte."""
    cid, image_path, label_path, out = task
    image = load_nifti_header(image_path)
    label = load_nifti_header(label_path)
    if len(image.shape) != 3:
        raise UserError(f"{image_path} has shape {tuple(image.shape)}; KiTS23 CT volumes are 3D.")
    check_same_geometry(image, label, image_path, label_path)
    values = label_values(label, label_path, range(4))
    check_gzip_stream(image_path)
    shutil.copyfile(image_path, Path(out) / "imagesTr" / f"{cid}_0000.nii.gz")
    shutil.copyfile(label_path, Path(out) / "labelsTr" / f"{cid}.nii.gz")
    return values


def convert_kits23(source, output_root=None, dataset_id: int | None = None, name: str | None = None,
                   splits=None, overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES,
                   verify: bool = False, skip_incomplete: bool = False) -> Path:
    """Convert a KiTS23 clone with downloaded imaging; returns the dataset folder. See the module docstring."""
    source = check_source(source)
    root = locate(source, _is_root, "KiTS23", "dataset/ with case_XXXXX folders (a neheller/kits23 clone)")
    cases, incomplete, partial = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _CASE.match(p.name)):
        image, label = folder / "imaging.nii.gz", folder / "segmentation.nii.gz"
        check_link(image)
        check_link(label)
        if image.is_file() and label.is_file():
            cases.append((folder.name, image, label))
            continue
        incomplete.append(folder.name)
        if any(p.name.startswith(".partial") for p in folder.iterdir()):
            partial.append(folder.name)
    if incomplete:
        interrupted = f" ({len(partial)} with an interrupted .partial download)" if partial else ""
        message = (f"{len(incomplete)} of {len(incomplete) + len(cases)} KiTS23 cases in {root} lack "
                   f"imaging.nii.gz or segmentation.nii.gz{interrupted}: {preview(incomplete, 10)}.")
        if not skip_incomplete or not cases:
            raise UserError(f"{message} The download is incomplete: run `kits23_download_data` again to finish "
                            f"it, or pass --skip-incomplete to convert only the complete cases.")
        print(f"warning: {message} Converting the {len(cases)} complete case(s) only.")

    case_ids = [c for c, _, _ in cases]
    names = {c: [c[len("case_"):], str(int(c[len("case_"):]))] for c in case_ids}
    folds, splits_note = make_splits(splits, case_ids, build_aliases(names), "KiTS23")

    with staged_dataset(root, output_root, DEFAULT_ID if dataset_id is None else dataset_id,
                        name or DEFAULT_NAME, overwrite) as stage:
        (stage.dir / "imagesTr").mkdir()
        (stage.dir / "labelsTr").mkdir()
        parallel_map(_convert_case, [(c, i, l, str(stage.dir)) for c, i, l in cases], num_processes, "KiTS23")
        write_dataset_json(stage.dir, {0: "CT"}, LABELS, len(cases), ".nii.gz",
                           regions_class_order=REGIONS_CLASS_ORDER, overwrite_image_reader_writer=READER_WRITER,
                           dataset_name=stage.name, description="KiTS23 kidney, tumor and cyst segmentation",
                           reference="Heller et al., The KiTS21 Challenge, MedIA 2023; KiTS23 arXiv:2307.01984",
                           license="CC BY-NC-SA 4.0", converted_by=f"{CONVERTED_BY} kits23")
        seal(stage, root, folds, {c: [i, l] for c, i, l in cases}, verify, num_processes)
    return announce(stage, folds, len(cases), 0, splits_note)
