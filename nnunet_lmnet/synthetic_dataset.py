"""A small synthetic segmentation dataset in nnU-Net raw format, for the demo and the tests (no download).

2D: grey PNG images with bright discs (label 1) and dark squares (label 2) on a noisy, shaded background.
3D: NIfTI volumes with bright balls and dark boxes, anisotropic spacing (so nnU-Net plans [1, 2, 2]-style strides).
Cases for training go to imagesTr/labelsTr, held-out cases to imagesTs/labelsTs. Deterministic for a given seed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

LABELS = {"background": 0, "disc": 1, "square": 2}


def _draw_case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    seg = np.zeros(shape, dtype=np.uint8)
    for _ in range(rng.integers(1, 3)):  # discs / balls
        centre = [rng.uniform(0.2 * s, 0.8 * s) for s in shape]
        radius = rng.uniform(0.08, 0.18) * min(shape[-2:])
        dist = np.sqrt(sum(((g - c) / (1.0 if s > 16 else 0.3)) ** 2 for g, c, s in zip(grids, centre, shape)))
        seg[dist <= radius] = 1
    for _ in range(rng.integers(0, 2) + 1):  # squares / boxes
        lo = [int(rng.uniform(0.1 * s, 0.6 * s)) for s in shape]
        size = [max(2, int(rng.uniform(0.12, 0.25) * s)) for s in shape]
        seg[tuple(slice(a, a + b) for a, b in zip(lo, size))] = 2
    shading = sum(rng.uniform(-0.3, 0.3) * g / s for g, s in zip(grids, shape))
    image = 0.5 + shading + rng.normal(0, 0.08, shape)
    image[seg == 1] += 0.35
    image[seg == 2] -= 0.3
    return image.astype(np.float32), seg


def write_synthetic_dataset(raw_root: str | os.PathLike, dataset_id: int, dim: int = 2, num_train: int = 40,
                            num_test: int = 8, shape: tuple[int, ...] | None = None, seed: int = 0,
                            overwrite: bool = False) -> Path:
    """Write Dataset<id>_Synthetic<dim>D under `raw_root` and return its folder."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    if dim not in (2, 3):
        raise ValueError("dim must be 2 or 3")
    shape = tuple(shape) if shape is not None else ((64, 64) if dim == 2 else (20, 48, 40))
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_Synthetic{dim}D"
    if folder.exists():
        if not overwrite:
            raise FileExistsError(f"{folder} exists; pass overwrite=True to replace it")
        shutil.rmtree(folder)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ending = ".png" if dim == 2 else ".nii.gz"
    for i in range(num_train + num_test):
        image, seg = _draw_case(rng, shape)
        split = "Tr" if i < num_train else "Ts"
        case = f"synth_{i:03d}"
        if dim == 2:
            _write_png(folder / f"images{split}" / f"{case}_0000.png", np.clip(image * 255, 0, 255).astype(np.uint8))
            _write_png(folder / f"labels{split}" / f"{case}.png", seg)
        else:
            _write_nifti(folder / f"images{split}" / f"{case}_0000.nii.gz", image)
            _write_nifti(folder / f"labels{split}" / f"{case}.nii.gz", seg)
    generate_dataset_json(str(folder), {0: "synthetic"}, LABELS, num_train, ending,
                          dataset_name=folder.name, description="nnunet-lmnet synthetic demo data")
    return folder


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def _write_nifti(path: Path, array: np.ndarray) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing((1.0, 1.0, 3.0))  # (x, y, z): thick slices -> anisotropic plans
    sitk.WriteImage(img, str(path))
