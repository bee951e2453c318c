"""Miniature downloads of the zero-shot datasets, laid out and encoded as the real ones (shared/specs/
datasets_zero_shot.md): PH2's BMPs (1-bit masks, one RGB mask, _roi decoys), PraNet's PNG TestDataset, TN-SCUI's
upper-case .PNG, TN3K's JPEG masks. Pixel content is made up; each builder returns {case id: expected label}.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import raw_entries
from nnunet_lmnet.errors import UserError


def blob(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1


def texture(rng, h: int, w: int, channels: int) -> np.ndarray:
    base = np.linspace(30, 220, w)[None, :, None] * np.ones((h, 1, channels))
    base += rng.normal(0, 12, (h, w, channels))
    base[..., 0] += np.linspace(-20, 20, h)[:, None]
    return np.clip(base, 0, 255).astype(np.uint8)


def refused(convert, match: str, raw: Path, *args, **kwargs) -> None:
    """``convert`` raises a UserError matching ``match`` and leaves nothing (no dataset, no hidden folder)."""
    before = raw_entries(raw)
    with pytest.raises(UserError, match=match):
        convert(*args, output_root=raw, num_processes=1, **kwargs)
    assert raw_entries(raw) - {p for p in raw_entries(raw) if p.endswith(".lock")} <= before


# ------------------------------------------------------------------------------------------------------------ PH2

def make_ph2(base: Path, ids=("IMD002", "IMD003", "IMD010"), flat: bool = False, seed: int = 5) -> dict:
    """``base/PH2Dataset/PH2 Dataset images/IMDnnn/...`` (or the flat MADGNet copy ``base/PH2/images``, ``masks``).

    Images: 24-bit RGB BMP, odd sizes. Lesion masks: 1-bit BMP, except IMD002's (24-bit RGB 0/255, as the real one).
    Decoys: IMD002's ``_roi/IMD002_R1_Label4.bmp`` and a stray ``_lesion.jpg`` (both hold other shapes).
    """
    rng = np.random.default_rng(seed)
    root = base / ("PH2" if flat else "PH2Dataset")
    truth = {}
    for k, cid in enumerate(ids):
        h, w = 47 + k, 61 + 2 * k
        mask = blob(h, w, h / 2, w / 2, h / 3, w / 4 + k)
        if flat:
            image_path, mask_path = root / "images" / f"{cid}.bmp", root / "masks" / f"{cid}_lesion.bmp"
        else:
            case = root / "PH2 Dataset images" / cid
            image_path = case / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp"
            mask_path = case / f"{cid}_lesion" / f"{cid}_lesion.bmp"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(texture(rng, h, w, 3)).save(image_path)
        if cid == "IMD002":
            Image.fromarray(np.repeat(mask[..., None], 3, -1).astype(np.uint8) * 255).save(mask_path)
        else:
            Image.fromarray(mask).convert("1").save(mask_path)  # mode "1": a 1-bit BMP
        truth[f"PH2_{cid}"] = mask
        if not flat and k == 0:
            roi = case / f"{cid}_roi"
            roi.mkdir()
            Image.fromarray(~mask).convert("1").save(roi / f"{cid}_R1_Label4.bmp")
            Image.fromarray((~mask).astype(np.uint8) * 255).save(mask_path.parent / f"{cid}_lesion.jpg")
    if flat:
        rows = [f"{k},{cid}.bmp,{cid}_lesion.bmp" for k, cid in enumerate(ids)]
        (root / "test_frame.csv").write_text("Image_Id,image_path,mask_path\n" + "\n".join(rows) + "\n")
    else:
        (root / "PH2_dataset.txt").write_text("|| Name || Histological Diagnosis || Clinical Diagnosis ||\n")
        (root / "Readme.txt").write_text("PH2 database (synthetic test copy)\n")
        (root / "PH2_dataset.xlsx").write_bytes(b"PK\x03\x04not really a spreadsheet")
    return truth


# ----------------------------------------------------------------------------------------------------- PraNet

def make_pranet(base: Path, subsets: dict[str, list[str]], nested: bool = False, seed: int = 6) -> dict:
    """``base/TestDataset/<subset>/{images,masks}/<n>.png`` (+ ``TestDataset/TestDataset/`` when ``nested``).

    Images RGB PNG; masks grey (mode L) 0/255, every second one saved as RGB; a ``.DS_Store`` decoy.
    Returns {(subset, stem): mask}.
    """
    rng = np.random.default_rng(seed)
    root = base / "TestDataset" / ("TestDataset" if nested else "")
    truth = {}
    for subset, stems in subsets.items():
        (root / subset / "images").mkdir(parents=True)
        (root / subset / "masks").mkdir()
        for k, stem in enumerate(stems):
            h, w = 30 + k, 36 + k
            Image.fromarray(texture(rng, h, w, 3)).save(root / subset / "images" / f"{stem}.png")
            mask = blob(h, w, h / 2, w / 3 + k, h / 4, w / 5)
            out = mask.astype(np.uint8) * 255
            Image.fromarray(np.repeat(out[..., None], 3, -1) if k % 2 else out).save(
                root / subset / "masks" / f"{stem}.png")
            truth[(subset, stem)] = mask
        (root / subset / "images" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return truth


# ---------------------------------------------------------------------------------------------------- TN-SCUI

def make_tnscui(base: Path, ids=(2, 4, 12), tests=(1, 2), seed: int = 7) -> dict:
    """``base/TNSCUI2020_train/{image,mask}/<ID>.PNG`` (grey with a black border; masks 0/255) + ``train.csv``
    and ``base/tnscui2020_testset/test_<n>.PNG``. IDs are not contiguous (12 sorts before 2 as text)."""
    rng = np.random.default_rng(seed)
    train = base / "TNSCUI2020_train"
    (train / "image").mkdir(parents=True)
    (train / "mask").mkdir()
    truth = {}
    for k, n in enumerate(ids):
        h, w = 26 + k, 33 + k
        grey = texture(rng, h, w, 1)[..., 0]
        grey[:3], grey[:, :2] = 0, 0  # black border, as the real scans
        Image.fromarray(grey).save(train / "image" / f"{n}.PNG")
        mask = blob(h, w, h / 2, w / 2, h / 4, w / 4 + k)
        Image.fromarray(mask.astype(np.uint8) * 255).save(train / "mask" / f"{n}.PNG")
        truth[f"TNSCUI_{n}"] = mask
    (train / "train.csv").write_text("ID,CATE\n" + "".join(f"{n},{n % 2}\n" for n in ids))
    if tests:
        (base / "tnscui2020_testset").mkdir()
        for n in tests:
            Image.fromarray(texture(rng, 20, 24, 1)[..., 0]).save(base / "tnscui2020_testset" / f"test_{n}.PNG")
    return truth


# -------------------------------------------------------------------------------------------------------- TN3K

def make_tn3k(base: Path, trainval: int = 4, test: int = 2, seed: int = 8) -> dict:
    """``base/tn3k/{trainval,test}-{image,mask}/NNNN.jpg``: JPEG images (grey, one RGB) and JPEG masks (lossy:
    ringing around 0/255). Returns {case id: the mask that was encoded}."""
    rng = np.random.default_rng(seed)
    root = base / "tn3k"
    truth = {}
    for part, count in (("trainval", trainval), ("test", test)):
        if not count:
            continue
        (root / f"{part}-image").mkdir(parents=True)
        (root / f"{part}-mask").mkdir()
        for n in range(count):
            h, w = 32 + n, 40 + n
            grey = texture(rng, h, w, 1)[..., 0]
            image = Image.fromarray(np.repeat(grey[..., None], 3, -1) if n == 1 else grey)
            image.save(root / f"{part}-image" / f"{n:04d}.jpg", quality=90)
            mask = blob(h, w, h / 2, w / 2, h / 4 + n, w / 4)
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / f"{part}-mask" / f"{n:04d}.jpg", quality=75)
            truth[f"TN3K_{part}_{n:04d}"] = mask
    return truth
