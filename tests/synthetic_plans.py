"""nnU-Net-shaped plans configurations for tests, without running the planner."""
from __future__ import annotations

import numpy as np

from nnunet_lmnet.benchmark.synthetic_plans import default_configuration as _package_configuration
from nnunet_lmnet.benchmark.synthetic_plans import plans_with  # noqa: F401 (re-exported for the tests)


def default_configuration(strides, kernel_sizes, patch_size, batch_size=2) -> dict:
    """The package's default configuration with widths capped at 320 in 2D too (the tests' geometry)."""
    return _package_configuration(strides, kernel_sizes, patch_size, batch_size, max_features=320)


def ds_scales(strides) -> list[np.ndarray]:
    """nnU-Net's deep-supervision scales (nnUNetTrainer._get_deep_supervision_scales)."""
    return list(1 / np.cumprod(np.vstack(strides), axis=0))[:-1]


# Geometries as nnU-Net plans them: (name, strides, kernels, patch sizes to try).
ISO_2D_7 = ([[1, 1]] + [[2, 2]] * 6, [[3, 3]] * 7)
ISO_2D_4 = ([[1, 1]] + [[2, 2]] * 3, [[3, 3]] * 4)
ANISO_3D_6 = ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
              [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]])
ISO_3D_4 = ([[1, 1, 1]] + [[2, 2, 2]] * 3, [[3, 3, 3]] * 4)
# The first four stages of ANISO_3D_6: flat (1, 3, 3) kernels, an in-plane-only stride and full 3D stages.
ANISO_3D_4 = (ANISO_3D_6[0][:4], ANISO_3D_6[1][:4])

GRID = [
    # id, (strides, kernels), patch, input channels, outputs
    ("2d-7stages-64x64", ISO_2D_7, (64, 64), 1, 2),
    ("2d-7stages-128x64", ISO_2D_7, (128, 64), 3, 4),
    ("2d-7stages-64x192", ISO_2D_7, (64, 192), 1, 4),
    ("2d-4stages-40x24", ISO_2D_4, (40, 24), 3, 2),
    ("3d-aniso-16x32x32", ANISO_3D_6, (16, 32, 32), 1, 2),
    ("3d-aniso-8x48x32", ANISO_3D_6, (8, 48, 32), 3, 4),
    ("3d-iso-16x16x24", ISO_3D_4, (16, 16, 24), 1, 4),
]
