"""The 2D pipeline shared by the zero-shot converters (ph2, pranet-test, tnscui2020, tn3k, folder).

LGMSNet's Table 2 trains on one dataset and predicts an unseen one of the same modality with no retraining. A
converter therefore has two output modes:

- ``target`` (``--mode target``): every labelled case goes to ``imagesTs/`` + ``labelsTs/``; nothing in
  ``imagesTr``, ``numTraining`` 0, no ``splits_final.json``. Predict with the *source* dataset's model
  (``nnUNetv2_predict -d SOURCE``) and score against ``labelsTs``. Images without a label are left out, since
  nnU-Net's evaluation expects a reference for every prediction.
- ``training`` (``--mode training``): a full dataset: ``imagesTr/`` + ``labelsTr/`` with ``splits_final.json``
  (default or ``--splits``), the source's official test part (if any) in ``imagesTs/`` (+ ``labelsTs/``).

Either way ``dataset.json`` (nnU-Net's ``generate_dataset_json``) carries the channel layout and label names of
the source the target pairs with (``pairs_with``), so a model trained there reads the images as it was trained:
1 grey channel for ultrasound (BUSI, thyroid), R/G/B for dermoscopy and endoscopy (ISIC, Kvasir).

Only the standard library is imported at module level (the CLI imports the converters lazily, but keep it cheap).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from nnunet_lmnet.errors import UserError

from .common import (CONVERTED_BY, Stage, check_same_size, load_binary_mask, mask_plane, open_image,
                     parallel_map, preview, report, save_label_png, save_png, staged_dataset, write_dataset_json)
from .finish import announce, seal
from .splits import make_splits

TARGET, TRAINING = "target", "training"
MODES = (TARGET, TRAINING)
GREY, RGB = "grey", "rgb"
CHANNEL_NAMES = {RGB: {0: "R", 1: "G", 2: "B"}}

# Share of pixels whose channels differ by more than this: above it an image counts as colour (not grey).
_COLOUR_SPREAD, _COLOUR_FRACTION = 48, 0.01


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    mask: Path | None = None
    test: bool = False  # part of the source's official test split (imagesTs in training mode)


@dataclass(frozen=True)
class Meta:
    """What dataset.json says about the converted data."""
    channels: str  # GREY or RGB: what every image is converted to
    channel_names: Mapping[int, str]
    labels: Mapping[str, int]
    description: str
    reference: str
    license: str
    converter: str  # the ``convert`` subcommand
    pairs_with: str | None = None  # the source dataset of the zero-shot protocol


@dataclass
class Plan:
    """One dataset to write, checked before anything is written."""
    root: Path  # the dataset's folder in SOURCE (case_mapping.json paths are relative to it)
    dataset: str  # for messages and the progress bar
    dataset_id: int
    name: str
    mode: str
    meta: Meta
    train: list[Case] = field(default_factory=list)
    test: list[Case] = field(default_factory=list)
    folds: list[dict] = field(default_factory=list)
    splits_note: str = ""
    label_map: dict[float, int] | None = None  # exact mask value -> label; None: binary masks (0/1, 0/255)
    skipped_unlabelled: int = 0
    mapping_root: Path | None = None  # case_mapping.json paths are relative to it (default: root)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}.")
    return mode


def child_dir(parent: Path, *names: str) -> Path | None:
    """The visible sub-folder of ``parent`` with one of ``names``, any letter case; None if there is none."""
    wanted = {n.lower() for n in names}
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return None
    for p in entries:
        if p.is_dir() and not p.name.startswith(".") and p.name.lower() in wanted:
            return p
    return None


def find_dirs(source: Path, predicate: Callable[[Path], bool], max_depth: int = 2) -> list[Path]:
    """The shallowest folders at or below ``source`` (up to ``max_depth`` levels) for which ``predicate`` holds."""
    def holds(path: Path) -> bool:
        try:
            return predicate(path)
        except OSError:  # an unreadable folder holds nothing we can convert
            return False

    def subdirs(path: Path) -> list[Path]:
        try:
            return [c for c in sorted(path.iterdir())
                    if c.is_dir() and not c.name.startswith(".") and c.name != "__MACOSX"]
        except OSError:
            return []

    level = [source]
    for _ in range(max_depth + 1):
        found = [p for p in level if holds(p)]
        if found:
            return found
        level = [c for p in level for c in subdirs(p)]
    return []


def plan_dataset(root: Path, dataset: str, cases: Sequence[Case], meta: Meta, mode: str, splits, aliases,
                 dataset_id: int, name: str, folds: tuple[list[dict], str] | None = None,
                 label_map: dict[float, int] | None = None) -> Plan:
    """Sort the cases into imagesTr/imagesTs by ``mode`` and resolve the folds; raises before any output exists.

    ``folds``: already resolved folds and their note (TN3K's index-based fold files); otherwise ``splits`` go
    through :func:`splits.make_splits`.
    """
    check_mode(mode)
    plan = Plan(root, dataset, dataset_id, name, mode, meta, label_map=label_map)
    if mode == TARGET:
        if splits:
            raise UserError(f"--splits only applies with --mode {TRAINING}: in --mode {TARGET} every {dataset} case "
                            f"goes to imagesTs/labelsTs and nothing is trained on.")
        plan.test = [c for c in cases if c.mask is not None]
        plan.skipped_unlabelled = len(cases) - len(plan.test)
        if not plan.test:
            raise UserError(f"{root} holds no {dataset} images with masks, so there is nothing to evaluate on.")
        plan.splits_note = "no splits_final.json (zero-shot target: nothing to train on)"
        return plan
    plan.train = [c for c in cases if not c.test]
    plan.test = [c for c in cases if c.test]
    if not plan.train:
        raise UserError(f"{root} holds no {dataset} training images. Use --mode {TARGET} to convert it as a test "
                        f"set only.")
    if folds is None:
        folds = make_splits(splits, [c.case_id for c in plan.train], aliases, dataset)
    plan.folds, plan.splits_note = folds
    return plan


def convert_plans(plans: Sequence[Plan], output_root, overwrite: bool, num_processes: int,
                  verify: bool) -> list[Path]:
    """Write every plan; all datasets appear together at the end, or (on any error) none of them."""
    with ExitStack() as stack:
        stages = [stack.enter_context(staged_dataset(p.root, output_root, p.dataset_id, p.name, overwrite))
                  for p in plans]
        results = [_write(plan, stage, num_processes, verify) for plan, stage in zip(plans, stages)]
    return [_announce(plan, stage, result) for plan, stage, result in zip(plans, stages, results)]


def _write(plan: Plan, stage: Stage, num_processes: int, verify: bool) -> list:
    out = stage.dir
    train_dirs, test_dirs = (out / "imagesTr", out / "labelsTr"), (out / "imagesTs", out / "labelsTs")
    for folder in ((train_dirs if plan.train else ()) + ((test_dirs[0],) if plan.test else ())
                   + ((test_dirs[1],) if any(c.mask for c in plan.test) else ())):
        folder.mkdir()
    tasks = [(c.case_id, str(c.image), None if c.mask is None else str(c.mask), str(images), str(labels),
              plan.meta.channels, plan.label_map)
             for cases, (images, labels) in ((plan.train, train_dirs), (plan.test, test_dirs)) for c in cases]
    results = parallel_map(convert_case, tasks, num_processes, plan.dataset)
    meta = plan.meta
    extra = {"pairs_with": meta.pairs_with} if meta.pairs_with else {}
    write_dataset_json(out, dict(meta.channel_names), dict(meta.labels), len(plan.train), ".png",
                       dataset_name=stage.name, description=meta.description, reference=meta.reference,
                       license=meta.license, converted_by=f"{CONVERTED_BY} {meta.converter}", **extra)
    mapping = {c.case_id: [p for p in (c.image, c.mask) if p is not None] for c in plan.train + plan.test}
    if plan.mode == TARGET:
        seal(stage, plan.mapping_root or plan.root, [], mapping, False, num_processes)
        if verify:
            verify_test_set(out, [c.case_id for c in plan.test], num_processes)
    else:
        seal(stage, plan.mapping_root or plan.root, plan.folds, mapping, verify, num_processes)
    return results


def _announce(plan: Plan, stage: Stage, results: list) -> Path:
    empty = sum(1 for area, _ in results if area == 0)
    coloured = sum(1 for _, colour in results if colour)
    if plan.skipped_unlabelled:
        print(f"note: {plan.skipped_unlabelled} {plan.dataset} image(s) without masks were left out (--mode "
              f"{TARGET} keeps only what can be evaluated; --mode {TRAINING} puts them into imagesTs).")
    if empty:
        print(f"note: {empty} {plan.dataset} mask(s) are empty (background only).")
    if coloured:
        print(f"warning: {coloured} {plan.dataset} image(s) have colour pixels (overlays or Doppler?) and were "
              f"converted to one grey channel.")
    if plan.mode == TARGET:
        report(stage.target, 0, len(plan.test), plan.splits_note)
        return stage.target
    return announce(stage, plan.folds, len(plan.train), len(plan.test), plan.splits_note)


# ---------------------------------------------------------------------------------------------------- worker

def to_channels(image, channels: str, path: Path):
    """``image`` as 8-bit grey ('L'), 16-bit grey ('I;16') or 'RGB'; and whether a grey result lost colour."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        if channels == RGB:
            raise UserError(f"{path} is a 16-bit grey image, so it has no colour channels. Convert it with "
                            f"--channels {GREY} (one channel).")
        arr = np.asarray(image)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise UserError(f"{path} holds values outside 0..65535; convert it to 8- or 16-bit first.")
        return Image.fromarray(arr.astype(np.uint16)), False
    if mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        image = image.convert(image.mode[:-1])  # alpha is not part of the image content
    if image.mode == "1":
        image = image.convert("L")
    if image.mode in ("CMYK", "YCbCr"):
        image = image.convert("RGB")
    if image.mode not in ("L", "RGB"):
        raise UserError(f"{path} uses the image mode {image.mode!r}, which this converter cannot turn into "
                        f"{channels} images. Convert it to 8-bit grey or RGB first.")
    if channels == RGB:
        return (image if image.mode == "RGB" else image.convert("RGB")), False
    if image.mode == "L":
        return image, False
    arr = np.asarray(image)
    spread = arr.max(-1).astype(np.int16) - arr.min(-1)
    # equal channels give exactly their value (the luma weights sum to one)
    return image.convert("L"), bool((spread > _COLOUR_SPREAD).mean() > _COLOUR_FRACTION)


def load_mapped_mask(path: Path, label_map: Mapping[float, int]):
    """A mask whose values are translated by ``label_map`` (value 0 is background unless mapped); any other value
    is an error naming the file."""
    import numpy as np

    img = open_image(path)
    plane = mask_plane(img, path)
    values = np.unique(plane)
    known = set(label_map) | {0}
    unknown = [v.item() for v in values if v.item() not in known]
    if unknown:
        listed = ", ".join(f"{k:g}:{v}" for k, v in sorted(label_map.items()))
        raise UserError(f"unexpected label values in {path}: {preview(unknown, 8)} (--label-map maps {listed}; "
                        f"other values than 0 are not allowed). Add them to --label-map or fix the mask.")
    out = np.zeros(plane.shape, np.uint8)
    for value, label in label_map.items():
        out[plane == value] = label
    return out, img.size


def convert_case(task) -> tuple[int, bool]:
    """Worker: one image (+ mask) -> ``<case>_0000.png`` (+ ``<case>.png``). Returns (label pixels or -1 without
    a mask, whether colour was dropped)."""
    case_id, image_path, mask_path, images_dir, labels_dir, channels, label_map = task
    image_path = Path(image_path)
    image = open_image(image_path)
    if getattr(image, "n_frames", 1) > 1:
        raise UserError(f"{image_path} holds {image.n_frames} frames; save one image per file (e.g. one PNG per "
                        f"frame) and convert those.")
    area = -1
    if mask_path is not None:
        mask_path = Path(mask_path)
        if label_map is None:
            mask, mask_size = load_binary_mask(mask_path)
        else:
            mask, mask_size = load_mapped_mask(mask_path, label_map)
        check_same_size(image.size, mask_size, image_path, mask_path)
        save_label_png(mask, Path(labels_dir) / f"{case_id}.png")
        area = int((mask > 0).sum())
    converted, coloured = to_channels(image, channels, image_path)
    save_png(converted, Path(images_dir) / f"{case_id}_0000.png")
    return area, coloured


# ---------------------------------------------------------------------------------------------------- verify

def _verify_pair(task) -> bool:
    from nnunetv2.experiment_planning.verify_dataset_integrity import check_cases, verify_labels

    images, label, num_channels, reader, expected = task
    return verify_labels(label, reader, expected) and check_cases(images, label, num_channels, reader)


def verify_test_set(folder: Path, case_ids: Sequence[str], num_processes: int) -> None:
    """nnU-Net's own per-case checks (labels, shapes, spacing, channel count) on imagesTs/labelsTs.

    ``verify_dataset_integrity`` itself only looks at imagesTr and fails on a dataset with ``numTraining`` 0, so
    its two per-case functions are run on the test pairs here.
    """
    import json

    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    meta = json.loads((folder / "dataset.json").read_text())
    images = folder / "imagesTs"
    channels = len(meta["channel_names"])
    # one PNG per case: nnU-Net reads an RGB PNG as its three channels
    files = {cid: [str(images / f"{cid}_0000.png")] for cid in case_ids}
    missing = [f for fs in files.values() for f in fs if not Path(f).is_file()]
    if missing:
        raise UserError(f"nnU-Net's check of the converted test set failed: {preview(missing)} missing. Please "
                        f"report this.")
    reader = determine_reader_writer_from_dataset_json(meta, files[case_ids[0]][0], verbose=False)
    expected = LabelManager(meta["labels"], regions_class_order=None).all_labels
    tasks = [(files[cid], str(folder / "labelsTs" / f"{cid}.png"), channels, reader, expected) for cid in case_ids]
    if not all(parallel_map(_verify_pair, tasks, num_processes, "nnU-Net check")):
        raise UserError("nnU-Net's dataset integrity check rejected the converted test set (details above), so "
                        "nothing was written. Please report this together with the message.")
