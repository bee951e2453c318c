"""Synthetic downloads for the converter tests, laid out like the real archives (see shared/specs/datasets.md).

Everything is generated here, small: names, folder structure, file formats and image modes copy the real data;
the pixel content is made up. Each builder returns what the tests need to check the conversion.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SPLITS_DIR = Path(__file__).resolve().parents[2] / "shared" / "dataset_splits"
needs_splits = pytest.mark.skipif(
    not SPLITS_DIR.is_dir(),
    reason=f"published split lists not found at {SPLITS_DIR} (the repo is expected at <x>/main with <x>/shared "
           f"beside it)")


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and folder marker) under root: equal before and after = untouched."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _blob(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1


def _texture(rng, h: int, w: int, channels: int) -> np.ndarray:
    base = np.linspace(30, 220, w)[None, :, None] * np.ones((h, 1, channels))
    base += rng.normal(0, 12, (h, w, channels))
    base[..., 0] += np.linspace(-20, 20, h)[:, None]
    return np.clip(base, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- Kvasir-SEG

def kvasir_ids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    return sorted("cj" + "".join(rng.choice(alphabet, 23)) for _ in range(n))


def make_kvasir(base: Path, ids: list[str], sizes=((52, 64), (47, 61), (40, 40)), seed: int = 0) -> dict:
    """``base/Kvasir-SEG/{images,masks}/<id>.jpg`` + ``kavsir_bboxes.json``; masks are RGB JPEGs (real ringing).

    Returns {id: binary mask that was encoded} (case 1 has two blobs).
    """
    rng = np.random.default_rng(seed)
    root = base / "Kvasir-SEG"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth, boxes = {}, {}
    for k, cid in enumerate(ids):
        h, w = sizes[k % len(sizes)]
        Image.fromarray(_texture(rng, h, w, 3)).save(root / "images" / f"{cid}.jpg")  # mode RGB, quality 75
        m = _blob(h, w, h * 0.45, w * 0.5, h * 0.25, w * 0.22)
        if k % len(sizes) == 1:
            m |= _blob(h, w, h * 0.8, w * 0.15, h * 0.1, w * 0.1)
        Image.fromarray(np.repeat(m[..., None].astype(np.uint8) * 255, 3, -1)).save(root / "masks" / f"{cid}.jpg")
        truth[cid] = m
        ys, xs = np.nonzero(m)
        boxes[cid] = {"height": h, "width": w, "bbox": [{"label": "polyp", "xmin": int(xs.min()),
                                                         "ymin": int(ys.min()), "xmax": int(xs.max()),
                                                         "ymax": int(ys.max())}]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(boxes))
    return truth


# ---------------------------------------------------------------------------------------------------------- BUSI

# The real images with several masks (datasets.md §3); benign (195) has _mask, _mask_1 and _mask_2.
BUSI_MULTI_MASK = {("benign", n): 1 for n in (4, 25, 54, 58, 83, 92, 93, 98, 100, 163, 173, 181, 315, 346, 424)}
BUSI_MULTI_MASK[("benign", 195)] = 2
BUSI_MULTI_MASK[("malignant", 53)] = 1


def make_busi(base: Path, counts: dict[str, int], multi_mask: dict | None = None, odd_modes: bool = True,
              size: int = 24, seed: int = 1) -> dict:
    """``base/Dataset_BUSI_with_GT/<class>/<class> (<n>).png`` + ``_mask.png`` (+ ``_mask_<k>.png``).

    Images are RGB with equal channels (as the real ones), a few with colour overlays or other modes; masks are
    grey 0/255, a few RGB / RGBA. Returns {(class, n): OR of all masks}.
    """
    multi_mask = BUSI_MULTI_MASK if multi_mask is None else multi_mask
    rng = np.random.default_rng(seed)
    root = base / "Dataset_BUSI_with_GT"
    truth = {}
    for cls, count in counts.items():
        folder = root / cls
        folder.mkdir(parents=True)
        for n in range(1, count + 1):
            h, w = size + n % 5, size + 3 + n % 7  # variable, non-square
            grey = _texture(rng, h, w, 1)[..., 0]
            rgb = np.repeat(grey[..., None], 3, -1)
            stem = f"{cls} ({n})"
            if odd_modes and n == 2:
                rgb[2:6, 2:9] = (255, 0, 0)  # a colour annotation overlay
            image = Image.fromarray(rgb)
            if odd_modes and n == 3:
                image = Image.fromarray(grey)  # mode L
            if odd_modes and n == 5:
                image = Image.fromarray(np.dstack([rgb, np.full((h, w), 255, np.uint8)]))  # mode RGBA
            image.save(folder / f"{stem}.png")
            extra = multi_mask.get((cls, n), 0)
            merged = np.zeros((h, w), bool)
            for k in range(extra + 1):
                m = np.zeros((h, w), bool) if cls == "normal" else _blob(h, w, 4 + 5 * k, 6 + 4 * k, 3, 4)
                merged |= m
                mask = m.astype(np.uint8) * 255
                if odd_modes and n == 6 and k == 0:
                    out = Image.fromarray(np.repeat(mask[..., None], 3, -1))  # RGB mask
                elif odd_modes and n == 7 and k == 0:
                    out = Image.fromarray(np.dstack([mask, mask, mask, np.full((h, w), 255, np.uint8)]))  # RGBA
                else:
                    out = Image.fromarray(mask)  # mode L
                suffix = "_mask" if k == 0 else f"_mask_{k}"
                out.save(folder / f"{stem}{suffix}.png")
            truth[(cls, n)] = merged
    return truth


# ----------------------------------------------------------------------------------------------------------- LGG

LGG_PATIENTS = {"TCGA_CS_4941_19960909": 12, "TCGA_CS_4942_19970222": 3, "TCGA_DU_A5TP_19970614": 3,
                "TCGA_HT_A61B_19991127": 3, "TCGA_FG_6690_20020226": 2, "TCGA_EZ_7264_20010816": 2}


def lgg_pixel(channel: int, patient_index: int, slice_number: int) -> int:
    """The constant value written into one channel plane: channel order and slice order show in the output."""
    return 10 + 80 * channel + 5 * patient_index + slice_number


def make_lgg(base: Path, patients: dict[str, int] = LGG_PATIENTS, size: int = 16, duplicate: bool = True) -> dict:
    """``base/kaggle_3m/TCGA_*/TCGA_*_<n>.tif`` (RGB) + ``_mask.tif`` (L, 0/255), data.csv, README.md and the
    nested duplicate ``base/lgg-mri-segmentation/kaggle_3m``. Returns {(folder, n): mask}."""
    truth = {}
    for copy in ([base / "kaggle_3m", base / "lgg-mri-segmentation" / "kaggle_3m"] if duplicate
                 else [base / "kaggle_3m"]):
        copy.mkdir(parents=True)
        (copy / "README.md").write_text("LGG segmentation dataset (synthetic test copy)\n")
        rows = ["Patient,RNASeqCluster,MethylationCluster,miRNACluster,CNCluster,RPPACluster,OncosignCluster,"
                "COCCluster,histological_type,neoplasm_histologic_grade,tumor_tissue_site,laterality,"
                "tumor_location,gender,age_at_initial_pathologic,race,ethnicity,death01"]
        for p, folder in enumerate(patients):
            rows.append(folder.rsplit("_", 1)[0] + ",2,4,2,2,,3,2,1,2,1,3,2,2,50,3,2,0")
            (copy / folder).mkdir()
            for n in range(1, patients[folder] + 1):  # written in creation order 1..N: not zero-padded
                planes = [np.full((size, size), lgg_pixel(c, p, n), np.uint8) for c in range(3)]
                Image.fromarray(np.dstack(planes)).save(copy / folder / f"{folder}_{n}.tif")
                mask = np.zeros((size, size), bool) if n % 3 == 0 else _blob(size, size, 8, 8, 3 + n % 3, 4)
                Image.fromarray(mask.astype(np.uint8) * 255).save(copy / folder / f"{folder}_{n}_mask.tif")
                truth[(folder, n)] = mask
        (copy / "data.csv").write_text("\n".join(rows) + "\n")
    return truth


# ------------------------------------------------------------------------------------------------------ ISIC 2018

def make_isic(base: Path, train: list[str], val: list[str] = (), test: list[str] = (), gt_for_tests: bool = True,
              size=(30, 40), seed: int = 2) -> dict:
    """The six ISIC 2018 Task 1 folders (with LICENSE.txt / ATTRIBUTION.txt) and a Task 2 GT folder.

    Images are RGB JPEGs (non-square), masks 8-bit grey PNGs 0/255. Returns {id: mask}.
    """
    rng = np.random.default_rng(seed)
    parts = [("Training", train, True), ("Validation", val, gt_for_tests), ("Test", test, gt_for_tests)]
    truth = {}
    for part, ids, with_gt in parts:
        if not ids:
            continue
        folder_in = base / f"ISIC2018_Task1-2_{part}_Input"
        folder_gt = base / f"ISIC2018_Task1_{part}_GroundTruth"
        folder_in.mkdir(parents=True)
        if with_gt:
            folder_gt.mkdir()
        for folder in (folder_in, folder_gt) if with_gt else (folder_in,):
            (folder / "LICENSE.txt").write_text("CC-BY-NC\n")
            (folder / "ATTRIBUTION.txt").write_text("ISIC Archive contributors\n")
        for k, cid in enumerate(ids):
            h, w = size[0] + k % 3, size[1] + 2 * (k % 4)
            Image.fromarray(_texture(rng, h, w, 3)).save(folder_in / f"{cid}.jpg", quality=90)
            mask = _blob(h, w, h / 2, w / 2, h / 3, w / 4)
            if with_gt:
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder_gt / f"{cid}_segmentation.png")
            truth[cid] = mask
    task2 = base / "ISIC2018_Task2_Training_GroundTruth_v3"
    task2.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(task2 / f"{train[0]}_attribute_globules.png")
    return truth


def isic_ids(n: int, start: int = 0) -> list[str]:
    return [f"ISIC_{start + 7 * i:07d}" for i in range(n)]


# ---------------------------------------------------------------------------------------------------------- BTCV

BTCV_AFFINE = np.array([[-0.7, 0, 0, 170.0], [0, -0.7, 0, 160.0], [0, 0, 3.0, -250.0], [0, 0, 0, 1]])


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def make_btcv(base: Path, train=("0001", "0002", "0021", "0022"), test=("0061", "0062"), shape=(16, 12, 6),
              decoys: bool = True, seed: int = 3) -> dict:
    """``base/RawData/Training/{img,label}/{img,label}NNNN.nii.gz``, ``RawData/Testing/img``, and the Synapse
    ``averaged-*`` decoy folders next to RawData. Axial slices on the last axis. Returns {number: label array}."""
    rng = np.random.default_rng(seed)
    raw = base / "RawData"
    truth = {}
    for n in train:
        image = rng.integers(-1000, 1000, shape).astype(np.int16)
        label = np.zeros(shape, np.uint8)
        organs = rng.choice(np.arange(1, 14), 4, replace=False)
        for j, organ in enumerate(organs):
            label[2 + 3 * j: 4 + 3 * j, 2:8, 1:5] = organ
        save_nifti(image, BTCV_AFFINE, raw / "Training" / "img" / f"img{n}.nii.gz")
        save_nifti(label, BTCV_AFFINE, raw / "Training" / "label" / f"label{n}.nii.gz")
        truth[n] = label
    for n in test:
        save_nifti(rng.integers(-1000, 1000, shape).astype(np.int16), BTCV_AFFINE,
                    raw / "Testing" / "img" / f"img{n}.nii.gz")
    if decoys:
        save_nifti(np.zeros((8, 8, 4), np.float32), np.eye(4),
                    base / "averaged-training-images" / "DET0000101_avg.nii.gz")
        save_nifti(np.zeros((8, 8, 4), np.uint8), np.eye(4),
                    base / "averaged-training-labels" / "DET0000101_avg_seg.nii.gz")
        save_nifti(np.zeros((8, 8, 4), np.float32), np.eye(4),
                    base / "averaged-testing-images" / "DET0000201_avg.nii.gz")
    return truth


# -------------------------------------------------------------------------------------------------------- KiTS23

def kits_affine(sz: float, px: float) -> np.ndarray:
    """The real KiTS23 header pattern: array (Z, Y, X), axis codes ('I', 'P', 'L'), sform 2, qform 0."""
    return np.array([[0, 0, -px, 0], [0, -px, 0, 0], [-sz, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


KITS_CASES = {"case_00000": ((6, 16, 20), 5.0, 0.8, (0, 1, 2)),
              "case_00001": ((8, 16, 16), 3.0, 0.7, (0, 1, 2, 3)),
              "case_00400": ((5, 14, 22), 1.0, 0.45, (0, 1, 3))}


def make_kits(base: Path, cases=KITS_CASES, incomplete=("case_00002",), seed: int = 4) -> dict:
    """``base/kits23/dataset/case_XXXXX/{imaging,segmentation}.nii.gz`` + ``instances/`` (float64, one hidden
    ``.suppl.`` file) + ``kits23.json``; each case in ``incomplete`` has only its segmentation and a
    ``.partial.imaging.nii.gz``. Returns {case: segmentation array (Z, Y, X)}."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    dataset = base / "kits23" / "dataset"
    truth = {}
    meta = []
    for case, (shape, sz, px, values) in cases.items():
        aff = kits_affine(sz, px)
        seg = np.zeros(shape, np.uint8)
        z = shape[0]
        seg[: z - 1, 3:12, 3:10] = 1
        if 2 in values:
            seg[1:3, 5:8, 4:7] = 2
        if 3 in values:
            seg[z - 3: z - 1, 8:11, 5:8] = 3
        if 2 not in values:
            seg[1:3, 5:8, 4:7] = 1
        save_nifti(rng.integers(-1024, 1500, shape).astype(np.int16), aff, dataset / case / "imaging.nii.gz")
        save_nifti(seg, aff, dataset / case / "segmentation.nii.gz")
        save_nifti((seg > 0).astype(np.float64), aff,
                    dataset / case / "instances" / "kidney_instance-1_annotation-1.nii.gz")
        truth[case] = seg
        meta.append({"case_id": case, "age_at_nephrectomy": 50, "gender": "male"})
    for case in incomplete:
        aff = kits_affine(2.0, 0.8)
        save_nifti(np.zeros((4, 8, 8), np.uint8), aff, dataset / case / "segmentation.nii.gz")
        (dataset / case / ".partial.imaging.nii.gz").write_bytes(b"\x1f\x8b\x08\x00partial")
        meta.append({"case_id": case})
    first = next(iter(cases))
    hidden = dataset / first / "instances" / ".suppl.tumor_instance-1_annotation-1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(cases[first][0]), kits_affine(*cases[first][1:3])), str(hidden))
    (dataset / "kits23.json").write_text(json.dumps(meta, indent=2))
    return truth


# ------------------------------------------------------------------------------------------------------- checks

def raw_entries(raw: Path) -> set[str]:
    """Names in the output root, hidden temporary folders included."""
    return {p.name for p in raw.iterdir()} if raw.exists() else set()


def load_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


class _ThreadContext:
    """Stands in for ``multiprocessing`` inside nnU-Net's checker: same checks, run on threads in this process.

    The checker's spawn pool would start a fresh interpreter that imports torch (5-20 s on a loaded 2-core box)
    for a handful of files.
    """
    from multiprocessing.pool import ThreadPool as Pool

    @staticmethod
    def get_context(method=None):
        return _ThreadContext


def verify_with_nnunet(folder: Path) -> None:
    """nnU-Net's own `--verify_dataset_integrity` check (raises on any problem)."""
    from unittest import mock

    import nnunetv2.experiment_planning.verify_dataset_integrity as checker
    import nnunetv2.utilities.utils as nnunet_utils

    with mock.patch.object(checker, "multiprocessing", _ThreadContext), \
            mock.patch.object(nnunet_utils, "Pool", _ThreadContext.Pool):
        checker.verify_dataset_integrity(str(folder), 1)


def check_folds(folds: list[dict], cases: set[str]) -> None:
    """Each fold partitions the cases; the validation sets are disjoint and cover every case."""
    seen = []
    for fold in folds:
        assert set(fold["train"]).isdisjoint(fold["val"])
        assert set(fold["train"]) | set(fold["val"]) == cases
        seen += fold["val"]
    assert sorted(seen) == sorted(cases)
