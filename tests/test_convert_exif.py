"""EXIF orientation: images and masks are read as viewers show them, with the same rule for both files of a pair."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import load_png, raw_entries
from nnunet_lmnet.dataset_conversion.isic2018 import convert_isic2018
from nnunet_lmnet.dataset_conversion.kvasir import convert_kvasir
from nnunet_lmnet.errors import UserError

ROTATED_CW = 6  # EXIF Orientation: "rotate 90° clockwise to display", what phones write for portrait shots


def _exif(orientation: int | None) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return exif


def _pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB image and mask as stored; the lesion sits in the top-left corner, so any rotation shows."""
    mask = np.zeros((h, w), bool)
    mask[2:h // 3, 2:w // 3] = True
    image = np.full((h, w, 3), 40, np.uint8)
    image[mask] = 220
    return image, mask


def _save(array: np.ndarray, path, orientation: int | None, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, exif=_exif(orientation), **kwargs)


def _decoded(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


SIZES = {"cjportrait0000000000000000": (30, 40), "cjsquare000000000000000000": (32, 32)}  # stored (h, w)


@pytest.fixture
def kvasir_rotated(tmp_path):
    """Kvasir layout: JPEG image and JPEG mask both tagged 'rotate 90° clockwise', one non-square, one square."""
    root = tmp_path / "dl" / "Kvasir-SEG"
    for cid, (h, w) in SIZES.items():
        image, mask = _pair(h, w)
        _save(image, root / "images" / f"{cid}.jpg", ROTATED_CW, quality=95)
        _save(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, -1), root / "masks" / f"{cid}.jpg", ROTATED_CW,
              quality=95)
    return tmp_path / "dl", root, tmp_path / "raw"


def test_tagged_images_and_masks_are_both_turned_upright(kvasir_rotated):
    source, root, raw = kvasir_rotated
    out = convert_kvasir(source, output_root=raw, num_processes=1)
    for cid, (h, w) in SIZES.items():
        image = load_png(out / "imagesTr" / f"{cid}_0000.png")
        label = load_png(out / "labelsTr" / f"{cid}.png")
        stored = _decoded(root / "images" / f"{cid}.jpg")
        assert image.shape == (w, h, 3)  # displayed: portrait
        assert np.array_equal(image, np.rot90(stored, -1))  # the pixels turned clockwise, not only the size
        assert np.array_equal(label, np.rot90(_decoded(root / "masks" / f"{cid}.jpg").max(-1) > 127, -1))
        # still a pair: the lesion's bright pixels are where the label is, now in the top-right corner
        assert np.array_equal(label, np.rot90(_pair(h, w)[1], -1))
        assert image[label == 1].mean() > 180 and image[label == 0].mean() < 80


@pytest.mark.parametrize("cid", list(SIZES))
def test_a_pair_with_different_orientations_is_refused(kvasir_rotated, cid):
    """Only the image tagged: for a square image either reading would fit, so neither is guessed."""
    source, root, raw = kvasir_rotated
    h, w = SIZES[cid]
    _, mask = _pair(h, w)
    _save(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, -1), root / "masks" / f"{cid}.jpg", None)
    with pytest.raises(UserError, match=f"orientation mismatch: .*{cid}\\.jpg carries EXIF orientation 6 \\(rotated "
                                        f"90° clockwise\\) but its mask .*{cid}\\.jpg carries no EXIF rotation"):
        convert_kvasir(source, output_root=raw, num_processes=1)
    assert raw_entries(raw) == set()


def test_isic_reads_tagged_images_upright_also_when_downscaling(tmp_path):
    """ISIC decodes large JPEGs reduced (draft) on the stored orientation; the result is upright all the same."""
    base = tmp_path / "isic"
    h, w = 40, 64
    image, mask = _pair(h, w)
    _save(image, base / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg", ROTATED_CW, quality=95)
    _save(mask.astype(np.uint8) * 255, base / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png",
          ROTATED_CW)
    out = convert_isic2018(base, output_root=tmp_path / "raw", num_processes=1, max_size=32)
    image_out = load_png(out / "imagesTr" / "ISIC_0000000_0000.png")
    label = load_png(out / "labelsTr" / "ISIC_0000000.png")
    assert image_out.shape == (32, 20, 3) and label.shape == (32, 20)
    expected = np.asarray(Image.fromarray(np.rot90(mask, -1).astype(np.uint8)).resize((20, 32), Image.NEAREST))
    assert np.array_equal(label, expected)
    assert image_out[label == 1].mean() > 180 and image_out[label == 0].mean() < 80
