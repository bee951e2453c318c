"""BTCV, Multi-Atlas Labeling Beyond the Cranial Vault, Abdomen (Synapse syn3193805) -> ``Dataset505_BTCV``.

Source: ``RawData.zip`` extracted; SOURCE may be ``RawData/``, a folder above it (also ``RawData/RawData``)::

    RawData/Training/img/img0001.nii.gz ... (30: 0001-0010, 0021-0040)
    RawData/Training/label/label0001.nii.gz ...
    RawData/Testing/img/img0061.nii.gz ... (20, no labels; ``Test/img`` is accepted too)

The Synapse ``averaged-training-images/``, ``averaged-training-labels/`` and ``averaged-testing-images/`` folders
(``DET*_avg.nii.gz``) are a different data set, not the 13-organ abdomen CT: they are ignored next to RawData and
refused when they are all there is.

Output:

- ``imagesTr/BTCV_0001_0000.nii.gz`` (channel ``CT``: nnU-Net's CT normalisation), ``labelsTr/BTCV_0001.nii.gz``,
  ``imagesTs/BTCV_0061_0000.nii.gz``. Files are copied byte for byte (nnU-Net's SimpleITK reader handles the
  standard axial layout); each pair is checked first (readable, complete gzip stream, same shape, spacing,
  direction and origin (:func:`~.common.check_same_geometry`), labels within 0..13).
- Labels (all 13 organs): 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver,
  7 stomach, 8 aorta, 9 inferior vena cava, 10 portal vein and splenic vein, 11 pancreas, 12 right adrenal
  gland, 13 left adrenal gland. ``--labels synapse8`` instead writes TransUNet's 8-organ remap (spleen, right
  kidney, left kidney, gallbladder, liver, stomach, aorta, pancreas; the rest -> background).

Splits of the literature (``--splits``; ids may be ``caseNNNN``, ``imgNNNN``, ``NNNN`` or ``BTCV_NNNN``):

- TransUNet Synapse 18/12: ``--splits test_vol.txt`` (its 12 test cases) -> one fold, val = those 12.
- UNETR / SwinUNETR 24/6 (val 0035-0040): a list file of the 6 validation ids, or an nnU-Net JSON.
- nnU-Net benchmark: the default 5-fold CV over the 30 cases.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import (CONVERTED_BY, DEFAULTS, DEFAULT_NUM_PROCESSES, check_gzip_stream, check_same_geometry,
                     check_source, label_values, list_files, load_nifti_header, locate, pair_files, parallel_map,
                     staged_dataset, write_dataset_json)
from .finish import announce, seal
from .splits import build_aliases, make_splits

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["btcv"]

ORGANS = ("spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
          "inferior vena cava", "portal vein and splenic vein", "pancreas", "right adrenal gland",
          "left adrenal gland")
LABELS = {"background": 0, **{organ: i + 1 for i, organ in enumerate(ORGANS)}}
# TransUNet's 8-organ evaluation set: original label -> new label (absent = background).
SYNAPSE8 = {1: 1, 2: 2, 3: 3, 4: 4, 6: 5, 7: 6, 8: 7, 11: 8}
LABELS_SYNAPSE8 = {"background": 0, **{ORGANS[old - 1]: new for old, new in SYNAPSE8.items()}}
LABEL_SETS = ("all", "synapse8")

_FILE = re.compile(r"^(?P<kind>img|label)(?P<n>\d{4})\.nii\.gz$", re.IGNORECASE)
_DECOY = re.compile(r"^DET\d+.*_avg", re.IGNORECASE)


def _is_root(path: Path) -> bool:
    return (path / "Training" / "img").is_dir()


def case_id(number: str) -> str:
    return f"BTCV_{number}"


def _scan(folder: Path, kind: str) -> dict[str, Path]:
    """``{'0001': path}`` for ``<kind>NNNN.nii.gz``; decoys and stray NIfTI files are errors."""
    out = {}
    for p in list_files(folder, (".nii.gz", ".nii")):
        if _DECOY.match(p.name):
            raise UserError(f"{p} is a Synapse 'averaged' DET*_avg file, not a BTCV abdomen CT. Use the "
                            f"RawData.zip download (RawData/Training/img/img0001.nii.gz ...).")
        m = _FILE.match(p.name)
        if m is None or m.group("kind").lower() != kind:
            raise UserError(f"unexpected file {p}: BTCV files in {folder.parent.name}/{folder.name}/ are named "
                            f"{kind}NNNN.nii.gz. Move it out of the folder.")
        out[m.group("n")] = p
    return out


def _convert_case(task) -> list[int]:
    """Worker: check one image (and label) and copy it byte for byte (the label remapped for synapse8)."""
    cid, image_path, label_path, images_dir, labels_dir, label_set = task
    image = load_nifti_header(image_path)
    if len(image.shape) != 3:
        raise UserError(f"{image_path} has shape {tuple(image.shape)}; BTCV CT volumes are 3D.")
    check_gzip_stream(image_path)
    values: list[int] = []
    if label_path is not None:
        label = load_nifti_header(label_path)
        check_same_geometry(image, label, image_path, label_path)
        values = label_values(label, label_path, range(len(LABELS)))
        if label_set == "synapse8":
            _write_remapped(label, Path(labels_dir) / f"{cid}.nii.gz")
        else:
            shutil.copyfile(label_path, Path(labels_dir) / f"{cid}.nii.gz")
    shutil.copyfile(image_path, Path(images_dir) / f"{cid}_0000.nii.gz")
    return values


def _write_remapped(label, path: Path) -> None:
    import nibabel as nib
    import numpy as np

    lut = np.zeros(256, dtype=np.uint8)
    for old, new in SYNAPSE8.items():
        lut[old] = new
    data = lut[np.asanyarray(label.dataobj).astype(np.intp)]
    header = label.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    nib.save(nib.Nifti1Image(data, label.affine, header), str(path))


def _find_root(source: Path) -> Path:
    try:
        return locate(source, _is_root, "BTCV RawData", "RawData/ with Training/img/ and Training/label/")
    except UserError:
        decoys = [p for p in [source, *source.iterdir()] if p.is_dir() and p.name.lower().startswith("averaged-")]
        if decoys:
            raise UserError(f"SOURCE {source} holds the Synapse 'averaged-*' folders (DET*_avg.nii.gz), which are "
                            f"not the BTCV abdomen CT. Download RawData.zip from Synapse (syn3193805, Abdomen), "
                            f"extract it and point at its RawData folder.") from None
        raise


def convert_btcv(source, output_root=None, dataset_id: int | None = None, name: str | None = None, splits=None,
                 overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES, verify: bool = False,
                 labels: str = "all") -> Path:
    """Convert an extracted BTCV RawData download; returns the dataset folder. See the module docstring."""
    source = check_source(source)
    if labels not in LABEL_SETS:
        raise UserError(f"--labels must be one of {', '.join(LABEL_SETS)}, got {labels!r}.")
    root = _find_root(source)
    img_dir, label_dir = root / "Training" / "img", root / "Training" / "label"
    if not label_dir.is_dir():
        raise UserError(f"{root / 'Training'} has img/ but no label/ folder. Extract RawData.zip completely.")
    images = _scan(img_dir, "img")
    if not images:
        raise UserError(f"{img_dir} holds no imgNNNN.nii.gz files. Extract RawData.zip completely.")
    pairs = [(case_id(n), i, l) for n, i, l in
             pair_files(images, _scan(label_dir, "label"), img_dir, label_dir, "labelNNNN.nii.gz", "label")]
    test_dir = next((d for d in (root / "Testing" / "img", root / "Test" / "img") if d.is_dir()), None)
    tests = [(case_id(n), p, None) for n, p in sorted(_scan(test_dir, "img").items())] if test_dir else []

    case_ids = [c for c, _, _ in pairs]
    names = {c: [f"img{c[-4:]}", f"label{c[-4:]}", f"case{c[-4:]}", c[-4:], str(int(c[-4:]))] for c in case_ids}
    folds, splits_note = make_splits(splits, case_ids, build_aliases(names), "BTCV")

    with staged_dataset(root, output_root, DEFAULT_ID if dataset_id is None else dataset_id,
                        name or DEFAULT_NAME, overwrite) as stage:
        out = stage.dir
        for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if tests else ()):
            (out / sub).mkdir()
        tasks = [(c, i, l, str(out / "imagesTr"), str(out / "labelsTr"), labels) for c, i, l in pairs]
        tasks += [(c, i, None, str(out / "imagesTs"), None, labels) for c, i, _ in tests]
        parallel_map(_convert_case, tasks, num_processes, "BTCV")
        label_map = LABELS_SYNAPSE8 if labels == "synapse8" else LABELS
        write_dataset_json(out, {0: "CT"}, label_map, len(pairs), ".nii.gz", dataset_name=stage.name,
                           description="BTCV abdomen multi-organ CT (RawData)"
                           + (", TransUNet 8-organ label remap" if labels == "synapse8" else ""),
                           reference="Landman et al., MICCAI Multi-Atlas Labeling Beyond the Cranial Vault, 2015",
                           license="Synapse syn3193805 data use terms", converted_by=f"{CONVERTED_BY} btcv")
        mapping = {c: [p for p in (i, l) if p is not None] for c, i, l in pairs + tests}
        seal(stage, root, folds, mapping, verify, num_processes)
    return announce(stage, folds, len(pairs), len(tests), splits_note)
