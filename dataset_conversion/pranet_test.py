"""PraNet's TestDataset (polyp test sets; Kvasir-SEG -> CVC-300 zero-shot target) -> one dataset per subset.

Source: PraNet's ``TestDataset`` download extracted; SOURCE may be ``TestDataset/``, the folder above it, the doubly
nested ``TestDataset/TestDataset/`` of some unzips, or one subset folder (then only that subset)::

    TestDataset/CVC-300/images/149.png ... 208.png   masks/149.png ...   (60)
    TestDataset/CVC-ClinicDB/   (62)   CVC-ColonDB/ (380)   ETIS-LaribPolypDB/ (196)   Kvasir/ (100)

| subset              | default id / folder         | case ids            |
|---------------------|-----------------------------|---------------------|
| ``CVC-300``         | 511 ``Dataset511_CVC300``       | ``CVC300_149``      |
| ``CVC-ClinicDB``    | 512 ``Dataset512_CVCClinicDB``  | ``CVCClinicDB_25``  |
| ``CVC-ColonDB``     | 513 ``Dataset513_CVCColonDB``   | ``CVCColonDB_244``  |
| ``ETIS-LaribPolypDB`` | 514 ``Dataset514_ETIS``       | ``ETIS_25``         |
| ``Kvasir``          | 515 ``Dataset515_PraNetKvasir`` | ``Kvasir_<id>``     |

- Every subset found is converted into its own dataset (all appear together at the end, or none);
  ``--subset NAME`` (repeatable) picks some. ``--dataset-id`` / ``--name`` need exactly one subset.
- Mask name = image name; images ``.png`` (``.jpg`` accepted), masks ``.png``/``.jpg``/``.tif``/``.bmp``.
- Images -> RGB PNG (3 channels R/G/B, as ``convert kvasir``). Masks in grey or RGB mode -> {0, 1: polyp}:
  0/255 (or 0/1) masks, > 127; a few grey edge pixels (resampled masks) are tolerated, a mostly grey file is an
  error. Subset folder names match in any case and with or without the hyphen (``CVC300``).
- Default ``--mode target``: every image in imagesTs/labelsTs; ``--mode training`` gives imagesTr/labelsTr with
  default 5-fold splits (or ``--splits``). The PraNet CVC-ClinicDB/Kvasir test images are near-duplicates of
  frames in PraNet's TrainDataset: do not use them as zero-shot targets of a model trained on that.
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunet_lmnet.errors import UserError

from .common import DEFAULTS, DEFAULT_NUM_PROCESSES, check_source, list_files, pair_files, preview, safe_id
from .splits import build_aliases
from .zero_shot import (CHANNEL_NAMES, RGB, TARGET, Case, Meta, child_dir, convert_plans, find_dirs,
                        plan_dataset)

# subset folder -> (default name, case-id prefix); default ids follow DEFAULTS["pranet-test"] in this order
SUBSETS = {
    "CVC-300": ("CVC300", "CVC300"),
    "CVC-ClinicDB": ("CVCClinicDB", "CVCClinicDB"),
    "CVC-ColonDB": ("CVCColonDB", "CVCColonDB"),
    "ETIS-LaribPolypDB": ("ETIS", "ETIS"),
    "Kvasir": ("PraNetKvasir", "Kvasir"),
}
FIRST_ID = DEFAULTS["pranet-test"][0]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_REFERENCES = {
    "CVC-300": "Vazquez et al., A benchmark for endoluminal scene segmentation of colonoscopy images, 2017",
    "CVC-ClinicDB": "Bernal et al., WM-DOVA maps for accurate polyp highlighting in colonoscopy, CMIG 2015",
    "CVC-ColonDB": "Tajbakhsh et al., Automated polyp detection in colonoscopy videos, IEEE TMI 2015",
    "ETIS-LaribPolypDB": "Silva et al., Toward embedded detection of polyps in WCE images, IJCARS 2014",
    "Kvasir": "Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020",
}


def default_id(subset: str) -> int:
    return FIRST_ID + list(SUBSETS).index(subset)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {_key(s): s for s in SUBSETS}


def subset_name(text: str) -> str:
    """The canonical subset name for ``text`` (any case, hyphens optional); an error listing the choices."""
    found = _BY_KEY.get(_key(text))
    if found is None:
        raise UserError(f"unknown PraNet test subset {text!r}; choose from {', '.join(SUBSETS)}.")
    return found


def _is_subset_dir(path: Path) -> bool:
    return _key(path.name) in _BY_KEY and child_dir(path, "images") is not None and child_dir(path, "masks") is not None


def _subset_dirs(path: Path) -> dict[str, Path]:
    return {_BY_KEY[_key(p.name)]: p for p in sorted(path.iterdir()) if p.is_dir() and _is_subset_dir(p)}


def _cases(subset: str, folder: Path) -> list[tuple[str, Path, Path]]:
    image_dir, mask_dir = child_dir(folder, "images"), child_dir(folder, "masks")
    images, masks = {}, {}
    for files, suffixes, table in ((image_dir, _IMAGE_SUFFIXES, images), (mask_dir, _MASK_SUFFIXES, masks)):
        for p in list_files(files, suffixes):
            if p.stem in table:
                raise UserError(f"{files} holds both {table[p.stem].name} and {p.name}; keep one of them.")
            table[p.stem] = p
    if not images:
        raise UserError(f"{image_dir} holds no .png images. Point SOURCE at PraNet's extracted TestDataset.")
    pairs = pair_files(images, masks, image_dir, mask_dir, "masks/<same name>")
    prefix = SUBSETS[subset][1]
    ids = {stem: f"{prefix}_{safe_id(stem)}" for stem, _, _ in pairs}
    if len(set(ids.values())) != len(ids):
        raise UserError(f"image names in {image_dir} differ only in characters that cannot be used in nnU-Net case "
                        f"ids; rename them.")
    return [(ids[stem], image, mask) for stem, image, mask in pairs]


def _meta(subset: str) -> Meta:
    return Meta(channels=RGB, channel_names=CHANNEL_NAMES[RGB], labels={"background": 0, "polyp": 1},
                description=f"{subset} polyp segmentation from PraNet's TestDataset (zero-shot target of Kvasir-SEG)",
                reference=f"{_REFERENCES[subset]}; Fan et al., PraNet, MICCAI 2020 (TestDataset)",
                license="terms of the original dataset (research use); PraNet's re-release inherits them",
                converter="pranet-test", pairs_with="kvasir")


def convert_pranet_test(source, output_root=None, dataset_id: int | None = None, name: str | None = None,
                        splits=None, overwrite: bool = False, num_processes: int = DEFAULT_NUM_PROCESSES,
                        verify: bool = False, mode: str = TARGET, subset=None) -> list[Path]:
    """Convert PraNet's extracted TestDataset; returns the dataset folders. ``subset``: a name or a list of names
    (default: every subset found). See the module docstring."""
    source = check_source(source)
    if _is_subset_dir(source):
        found = {_BY_KEY[_key(source.name)]: source}
    else:
        roots = find_dirs(source, lambda p: bool(_subset_dirs(p)))
        if not roots:
            raise UserError(f"SOURCE {source} does not hold PraNet's TestDataset: expected folders such as "
                            f"CVC-300/images/ + CVC-300/masks/ in it or up to 2 levels below it. Check that you "
                            f"picked the right folder and converter.")
        if len(roots) > 1:
            raise UserError(f"SOURCE {source} holds several TestDataset folders ({', '.join(map(str, roots))}). "
                            f"Point at one of them.")
        found = _subset_dirs(roots[0])
    wanted = [subset] if isinstance(subset, str) else list(subset or [])
    chosen = [subset_name(s) for s in wanted] if wanted else list(found)
    missing = [s for s in chosen if s not in found]
    if missing:
        raise UserError(f"{preview(missing)} not found in {source} (found: {', '.join(found)}).")
    chosen = list(dict.fromkeys(chosen))
    if (dataset_id is not None or name is not None) and len(chosen) != 1:
        raise UserError(f"--dataset-id and --name name one dataset, but {len(chosen)} subsets would be converted "
                        f"({', '.join(chosen)}). Pick one with --subset.")
    if splits and len(chosen) != 1:
        raise UserError("--splits belong to one dataset: pick its subset with --subset.")

    plans = []
    for s in chosen:
        pairs = _cases(s, found[s])
        cases = [Case(cid, image, mask) for cid, image, mask in pairs]
        aliases = build_aliases({cid: [image.name] for cid, image, _ in pairs})
        plans.append(plan_dataset(found[s], s, cases, _meta(s), mode, splits, aliases,
                                  default_id(s) if dataset_id is None else dataset_id, name or SUBSETS[s][0]))
    return convert_plans(plans, output_root, overwrite, num_processes, verify)
