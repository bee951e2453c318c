"""LGG brain MRI (Kaggle ``mateuszbuda/lgg-mri-segmentation``, ``kaggle_3m``) -> ``Dataset503_LGG`` (2D) or
``Dataset507_LGG3D`` (``--as-3d``).

Source: the Kaggle zip extracted; SOURCE may be the zip's top folder, ``kaggle_3m/`` or ``lgg-mri-segmentation/``::

    kaggle_3m/TCGA_<inst>_<patient>_<YYYYMMDD>/TCGA_..._<slice>.tif  + TCGA_..._<slice>_mask.tif
    kaggle_3m/data.csv, README.md                      (ignored)
    lgg-mri-segmentation/kaggle_3m/...                 (the archive's duplicate copy: ignored)

The shallowest ``kaggle_3m`` wins, so the duplicate nested copy never doubles the cases. Slice numbers are not
zero-padded (``_10`` after ``_9``): they are ordered numerically.

Output, 2D (default): one case per slice, ``TCGA_CS_4941_19960909_s001``, ``..._s012`` (zero-padded). The RGB
TIFF's three planes become three nnU-Net channels, ``_0000.png`` pre-contrast, ``_0001.png`` FLAIR,
``_0002.png`` post-contrast (the dataset's channel order; missing sequences were filled with FLAIR by the
dataset authors). Labels {0: background, 1: FLAIR abnormality} from the 0/255 masks. Default splits: 5 folds
grouped by patient (``TCGA_<inst>_<patient>``), so no patient has slices in two folds; nnU-Net's own case-level
split would leak.

Output, 3D (``--as-3d``): one case per patient folder, the numerically ordered slices stacked into NIfTI
(``<folder>_0000.nii.gz`` ... ``_0002``), all slices kept. The TIFFs carry no spacing: the volumes get
``--spacing X Y Z`` (default 1 1 1 mm), which is an assumption, not a measurement.

Split lists may name slices (``TCGA_CS_4941_19960909_1``, file names too) or patients (a folder name or
``TCGA_CS_4941``), which stand for all of that patient's cases.
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import (CONVERTED_BY, DEFAULTS, DEFAULT_NUM_PROCESSES, binarize, check_link, check_same_orientation,
                     check_source, locate, mask_plane, open_image, parallel_map, preview, staged_dataset,
                     write_dataset_json)
from .finish import announce, seal
from .splits import build_aliases, make_splits

DEFAULT_ID, DEFAULT_NAME = DEFAULTS["lgg"]
DEFAULT_ID_3D, DEFAULT_NAME_3D = DEFAULTS["lgg3d"]
CHANNELS = {0: "pre-contrast", 1: "FLAIR", 2: "post-contrast"}
LABELS = {"background": 0, "FLAIR abnormality": 1}

_SLICE = re.compile(r"^(?P<prefix>.+)_(?P<n>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)
_PATIENT = re.compile(r"^(?P<patient>TCGA_[A-Za-z0-9]+_[A-Za-z0-9]+)_\d{8}$")


def _is_root(path: Path) -> bool:
    return any(p.name.startswith("TCGA_") for p in path.iterdir() if p.is_dir())


def patient_of(folder_name: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941`` (a patient scanned twice stays one group)."""
    m = _PATIENT.match(folder_name)
    return m.group("patient") if m else folder_name


def _scan_patient(folder: Path) -> list[tuple[int, Path, Path]]:
    """(slice number, image, mask) in numeric order."""
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.name.startswith(".") or p.suffix.lower() not in (".tif", ".tiff"):
            continue
        check_link(p)
        if not p.is_file():
            continue
        m = _SLICE.match(p.name)
        if m is None:
            raise UserError(f"unexpected file {p}: LGG slices are named '<folder>_<n>.tif' and "
                            f"'<folder>_<n>_mask.tif'. Move it out of the folder.")
        bucket = masks if m.group("mask") else images
        n = int(m.group("n"))
        if n in bucket:
            raise UserError(f"{folder} holds two files for slice {n}: {bucket[n].name} and {p.name}.")
        bucket[n] = p
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        raise UserError(f"{len(no_mask)} slice(s) in {folder} have no mask: "
                        f"{preview(images[n].name for n in no_mask)} (expected <name>_mask.tif). Restore the "
                        f"masks from the original download.")
    if no_image:
        raise UserError(f"{len(no_image)} mask(s) in {folder} have no image: "
                        f"{preview(masks[n].name for n in no_image)}. Restore the images or remove the masks.")
    if not images:
        raise UserError(f"patient folder {folder} holds no .tif slices. Re-extract it or remove it.")
    return [(n, images[n], masks[n]) for n in sorted(images)]


def _open_tiff(path: Path):
    """PIL image of a TIFF; tifffile as a fallback for TIFF variants PIL cannot decode."""
    try:
        return open_image(path)
    except UserError as pil_error:
        try:
            import tifffile
            from PIL import Image

            return Image.fromarray(tifffile.imread(str(path)))
        except Exception:
            raise pil_error from None


def _read_slice(image_path: Path, mask_path: Path):
    """(H, W, 3) uint8 image and (H, W) {0,1} mask of one slice, checked."""
    import numpy as np

    image = np.asarray(_open_tiff(image_path))
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise UserError(f"{image_path} is not an 8-bit 3-channel (pre-contrast, FLAIR, post-contrast) TIFF "
                        f"(shape {image.shape}, {image.dtype}). Replace it with the original file.")
    check_same_orientation(image_path, mask_path)
    mask = binarize(mask_plane(_open_tiff(mask_path), mask_path), mask_path, lossy=False)
    if mask.shape != image.shape[:2]:
        raise UserError(f"size mismatch: {image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
                        f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} (width x height). Replace the mask with "
                        f"the original.")
    return image[..., :3], mask


def _convert_slice(task) -> int:
    """Worker (2D): one slice -> three grey PNG channels + {0,1} PNG label."""
    from PIL import Image

    cid, image_path, mask_path, out = task
    image, mask = _read_slice(image_path, mask_path)
    for c in range(3):
        Image.fromarray(image[..., c].copy(), mode="L").save(Path(out) / "imagesTr" / f"{cid}_{c:04d}.png")
    Image.fromarray(mask, mode="L").save(Path(out) / "labelsTr" / f"{cid}.png")
    return int(mask.sum())


def _convert_volume(task) -> int:
    """Worker (3D): one patient's slices, in numeric order -> three NIfTI channels + NIfTI label."""
    import numpy as np
    import SimpleITK as sitk

    cid, slices, out, spacing = task
    images, masks = [], []
    for _, image_path, mask_path in slices:
        image, mask = _read_slice(image_path, mask_path)
        if images and image.shape != images[0].shape:
            raise UserError(f"{image_path} is {image.shape[1]}x{image.shape[0]} but the other slices of "
                            f"{image_path.parent.name} are {images[0].shape[1]}x{images[0].shape[0]}; a volume "
                            f"needs equal slices.")
        images.append(image)
        masks.append(mask)
    volume = np.stack(images)  # (Z, Y, X, C): SimpleITK takes arrays as z, y, x
    label = np.stack(masks)

    def write(array, path):
        itk = sitk.GetImageFromArray(np.ascontiguousarray(array))
        itk.SetSpacing(tuple(float(s) for s in spacing))
        sitk.WriteImage(itk, str(path), useCompression=True)

    for c in range(3):
        write(volume[..., c], Path(out) / "imagesTr" / f"{cid}_{c:04d}.nii.gz")
    write(label, Path(out) / "labelsTr" / f"{cid}.nii.gz")
    return int(label.sum())


def convert_lgg(source, output_root=None, dataset_id: int | None = None, name: str | None = None, splits=None,
                overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES, verify: bool = False,
                as_3d: bool = False, spacing=(1.0, 1.0, 1.0)) -> Path:
    """Convert an extracted LGG (kaggle_3m) download; returns the dataset folder. See the module docstring."""
    source = check_source(source)
    root = locate(source, _is_root, "LGG kaggle_3m", "kaggle_3m/ with TCGA_* patient folders")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise UserError(f"--spacing needs three positive numbers (x y z in mm), got {spacing}.")
    if not as_3d and spacing != (1.0, 1.0, 1.0):
        print("note: --spacing only applies to --as-3d volumes; 2D slices carry no spacing.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("TCGA_"))
    patients = {f.name: _scan_patient(f) for f in folders}

    groups: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    mapping: dict[str, list[Path]] = {}
    tasks = []
    for folder, slices in patients.items():
        patient = patient_of(folder)
        if as_3d:
            groups[folder] = patient
            names[folder] = [patient]
            mapping[folder] = [p for _, i, m in slices for p in (i, m)]
            tasks.append((folder, slices, None, spacing))
        else:
            width = max(3, len(str(slices[-1][0])))
            for n, image, mask in slices:
                cid = f"{folder}_s{n:0{width}d}"
                groups[cid] = patient
                names[cid] = [image.stem, f"{folder}_{n}", folder, patient]
                mapping[cid] = [image, mask]
                tasks.append((cid, image, mask, None))
    case_ids = sorted(groups)
    folds, splits_note = make_splits(splits, case_ids, build_aliases(names), "LGG", groups)

    default_id, default_name = (DEFAULT_ID_3D, DEFAULT_NAME_3D) if as_3d else (DEFAULT_ID, DEFAULT_NAME)
    with staged_dataset(root, output_root, default_id if dataset_id is None else dataset_id,
                        name or default_name, overwrite) as stage:
        (stage.dir / "imagesTr").mkdir()
        (stage.dir / "labelsTr").mkdir()
        if as_3d:
            tasks = [(cid, slices, str(stage.dir), sp) for cid, slices, _, sp in tasks]
            parallel_map(_convert_volume, tasks, num_processes, "LGG volumes")
        else:
            tasks = [(cid, image, mask, str(stage.dir)) for cid, image, mask, _ in tasks]
            parallel_map(_convert_slice, tasks, num_processes, "LGG slices")
        mode = (f"3D, one volume per patient, assumed spacing {spacing} mm (the TIFFs carry none)" if as_3d
                else "2D, one case per slice")
        write_dataset_json(stage.dir, CHANNELS, LABELS, len(case_ids), ".nii.gz" if as_3d else ".png",
                           dataset_name=stage.name, description=f"LGG FLAIR abnormality segmentation, kaggle_3m, "
                           f"{mode}",
                           reference="Buda et al., Comput Biol Med 2019; Mazurowski et al., J Neurooncol 2017",
                           license="see the Kaggle dataset page (derived from TCIA TCGA-LGG)",
                           converted_by=f"{CONVERTED_BY} lgg")
        seal(stage, root, folds, mapping, verify, num_processes)
    return announce(stage, folds, len(case_ids), 0, splits_note)
