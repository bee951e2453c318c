"""The unseen dataset of a zero-shot evaluation: where its images and labels are, and whether a trained model of
another dataset can be applied to it.

A target is an nnU-Net raw dataset (``$nnUNet_raw/DatasetXXX_Name``, given by id, name or folder) with a
``dataset.json``. Its test images and labels are taken from ``imagesTs/`` + ``labelsTs/`` (how the zero-shot
converters write a target); a dataset without them is evaluated on ``imagesTr/`` + ``labelsTr/``.

Compatibility is checked before anything is predicted (a clear error instead of a failure in the middle):
the same file ending as the source; the same number of input channels (``channel_names`` of dataset.json, the
channel files of every case, and the channels nnU-Net's reader sees); label maps with one channel, the image's
size, and only label values the source model knows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..nnunet_paths import load_json_file, require_env_folder

SPLITS = {"test": ("imagesTs", "labelsTs"), "train": ("imagesTr", "labelsTr")}
# PIL modes -> the number of channels nnU-Net's NaturalImage2DIO (skimage) makes of them; other modes are read
_PIL_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1, "RGB": 3, "RGBA": 4, "LA": 2}


@dataclass
class TargetDataset:
    name: str
    folder: Path
    dataset_json: dict
    images_dir: Path
    labels_dir: Path
    split_note: str
    cases: dict[str, list[Path]] = field(default_factory=dict)  # case id -> channel files _0000, _0001, ...

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    def label_file(self, case: str) -> Path:
        return self.labels_dir / f"{case}{self.file_ending}"


def _examples(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f" and {len(items) - n} more" if len(items) > n else "")


def target_folder(target: str) -> Path:
    """--target as a folder, a dataset id or a dataset name in $nnUNet_raw."""
    as_path = Path(target).expanduser()
    if as_path.is_dir() and (as_path / "dataset.json").is_file():
        return as_path
    raw = require_env_folder("nnUNet_raw")
    if target.isdigit():
        matches = sorted(p for p in raw.glob(f"Dataset{int(target):03d}_*") if p.is_dir())
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UserError(f"--target {target}: several datasets in {raw} have that id "
                            f"({_examples(p.name for p in matches)}); give the full name.")
    elif (raw / target).is_dir():
        return raw / target
    found = sorted(p.name for p in raw.glob("Dataset*") if p.is_dir())
    hint = f" Datasets there: {_examples(found, 10)}." if found else ""
    raise UserError(f"--target {target}: no such dataset in nnUNet_raw={raw}. Convert the target dataset first "
                    f"(e.g. `nnunet-lmnet convert ...`) or give its folder.{hint}")


def _has_files(folder: Path, ending: str) -> bool:
    return folder.is_dir() and any(f.name.endswith(ending) for f in folder.iterdir())


def choose_split(folder: Path, ending: str, split: str) -> tuple[Path, Path, str]:
    """(images, labels, sentence saying which was used). split: auto, test or train."""
    if split not in ("auto", *SPLITS):
        raise UserError(f"--target-split must be auto, test or train, got '{split}'.")
    for name in (("test", "train") if split == "auto" else (split,)):
        img, lab = (folder / d for d in SPLITS[name])
        if _has_files(img, ending) and lab.is_dir():
            if name == "test":
                note = "imagesTs/ + labelsTs/"
            else:
                why = " (the target has no imagesTs/ with labelsTs/)" if split == "auto" else ""
                note = f"imagesTr/ + labelsTr/{why}"
            return img, lab, note
    wanted = " or ".join(f"{a}/ + {b}/" for a, b in (SPLITS.values() if split == "auto" else [SPLITS[split]]))
    raise UserError(f"the target {folder} has no {wanted} with {ending} images. Zero-shot targets keep their "
                    f"cases in imagesTs/ (images CASE_0000{ending}) and labelsTs/ (CASE{ending}).")


def group_cases(images_dir: Path, ending: str) -> dict[str, list[Path]]:
    """Case id -> its channel files in channel order; UserError for names nnU-Net would not read."""
    pattern = re.compile(r"(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending))
    channels: dict[str, dict[int, Path]] = {}
    bad = []
    for f in sorted(images_dir.iterdir()):
        if not f.name.endswith(ending) or f.name.startswith("."):
            continue
        m = pattern.fullmatch(f.name)
        if m is None:
            bad.append(f.name)
            continue
        channels.setdefault(m["case"], {})[int(m["ch"])] = f
    if bad:
        raise UserError(f"{images_dir}: image files must be named CASE_XXXX{ending} (XXXX = channel index), but "
                        f"{_examples(bad)} are not.")
    cases = {}
    for case, chans in channels.items():
        if sorted(chans) != list(range(len(chans))):
            raise UserError(f"{images_dir}: case {case} has channel files {sorted(chans)}; they must be numbered "
                            f"0000, 0001, ... without gaps.")
        cases[case] = [chans[k] for k in range(len(chans))]
    counts = {len(v) for v in cases.values()}
    if len(counts) > 1:
        raise UserError(f"{images_dir}: cases have different numbers of channel files ({sorted(counts)}); every "
                        f"case needs the same channels.")
    return cases


def load_target(target: str, split: str = "auto") -> TargetDataset:
    folder = target_folder(target)
    dj = load_json_file(folder / "dataset.json", "target dataset.json")
    for key in ("file_ending", "labels"):
        if key not in dj:
            raise UserError(f"{folder / 'dataset.json'} has no '{key}'; write it with nnU-Net's "
                            f"generate_dataset_json (the converters do).")
    if "channel_names" not in dj and "modality" not in dj:
        raise UserError(f"{folder / 'dataset.json'} has no 'channel_names'.")
    images, labels, note = choose_split(folder, dj["file_ending"], split)
    t = TargetDataset(name=folder.name, folder=folder, dataset_json=dj, images_dir=images, labels_dir=labels,
                      split_note=note, cases=group_cases(images, dj["file_ending"]))
    if not t.cases:
        raise UserError(f"{images} holds no CASE_XXXX{t.file_ending} images.")
    labels_found = {f.name[: -len(t.file_ending)] for f in labels.iterdir()
                    if f.name.endswith(t.file_ending) and not f.name.startswith(".")}
    no_label = sorted(set(t.cases) - labels_found)
    if no_label:
        raise UserError(f"{len(no_label)} image case(s) in {images} have no label file in {labels}: "
                        f"{_examples(no_label)}. Every test image needs its label CASE{t.file_ending}.")
    no_image = sorted(labels_found - set(t.cases))
    if no_image:
        raise UserError(f"{len(no_image)} label file(s) in {labels} have no image in {images}: "
                        f"{_examples(no_image)}. Remove them or add the images.")
    return t


# ------------------------------------------------------------------------------------------------ compatibility
def _channel_names(dj: dict) -> dict:
    return dict(dj.get("channel_names") or dj.get("modality") or {})


def _label_values(labels: dict) -> set[int]:
    values = set()
    for v in labels.values():
        values.update(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
    return values


def _pil_geometry(path: Path) -> tuple[int | None, tuple[int, int]]:
    """(channels as nnU-Net's natural-image reader sees them or None if unsure, (height, width)) from the header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return _PIL_CHANNELS.get(im.mode), (im.height, im.width)
    except Exception as e:
        raise UserError(f"cannot read image {path}: {e}") from None


def check_compatible(target: TargetDataset, source_name: str, source_dj: dict, label_manager, reader_class,
                     num_input_channels: int) -> list[str]:
    """UserError on anything that would make the prediction or the evaluation wrong; returns notes for the report.

    source_dj: the model's dataset.json; label_manager: nnU-Net's LabelManager of the source model; reader_class:
    the reader/writer nnU-Net uses for the source (plans.json's image_reader_writer).
    """
    import numpy as np
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    notes = []
    tdj = target.dataset_json
    if tdj["file_ending"] != source_dj.get("file_ending"):
        raise UserError(f"the target {target.name} has {tdj['file_ending']} files but the model of {source_name} "
                        f"reads {source_dj.get('file_ending')}: convert the target with the same file ending.")
    src_ch, tgt_ch = _channel_names(source_dj), _channel_names(tdj)
    if len(tgt_ch) != num_input_channels:
        raise UserError(f"channel mismatch: the model of {source_name} takes {num_input_channels} input "
                        f"channel(s) {src_ch} but the target {target.name} declares {len(tgt_ch)} {tgt_ch} in its "
                        f"dataset.json. Convert the target with the source's channels (e.g. grey ultrasound as 1 "
                        f"channel, dermoscopy/endoscopy as RGB).")
    if list(src_ch.values()) != list(tgt_ch.values()):
        notes.append(f"Channel names differ (source {src_ch}, target {tgt_ch}); only their number matters for "
                     f"prediction, the source's plans fix the normalisation.")

    rw = reader_class()
    natural = isinstance(rw, NaturalImage2DIO)
    first_case, first_files = next(iter(target.cases.items()))
    try:
        first, _ = rw.read_images([str(f) for f in first_files])
    except Exception as e:
        raise UserError(f"cannot read case {first_case} ({first_files[0]}) with {reader_class.__name__}: {e}") \
            from None
    image_shapes = {first_case: tuple(first.shape[1:])}
    seen = {first_case: int(first.shape[0])}
    if natural:
        for case, files in target.cases.items():
            geo = [_pil_geometry(f) for f in files]
            if all(c is not None for c, _ in geo):
                seen[case] = sum(c for c, _ in geo)
            image_shapes[case] = (1, *geo[0][1])
    # other readers: one channel per file, and every case has as many files as the first (group_cases)
    wrong = {c: n for c, n in seen.items() if n != num_input_channels}
    if wrong:
        case, n = next(iter(wrong.items()))
        raise UserError(f"channel mismatch: the model of {source_name} takes {num_input_channels} input channel(s), "
                        f"but {len(wrong)} target case(s) have another number, e.g. {case} with {n} "
                        f"({target.cases[case][0]}). Convert the target with the source's channels "
                        f"(`--channels grey|rgb` of `nnunet-lmnet convert folder`).")

    known = {int(v) for v in label_manager.all_labels}
    allowed = known | ({int(label_manager.ignore_label)} if label_manager.has_ignore_label else set())
    declared = _label_values(tdj["labels"])
    unknown = sorted(declared - allowed)
    if unknown:
        raise UserError(f"label mismatch: the target {target.name} declares label value(s) {unknown} in its "
                        f"dataset.json that the model of {source_name} does not predict (it knows "
                        f"{sorted(allowed)}: {source_dj.get('labels')}). Map the target's labels onto the source's "
                        f"(e.g. `--label-map 255:1` of `nnunet-lmnet convert folder`).")
    src_names = {int(v): k for k, v in (source_dj.get("labels") or {}).items() if not isinstance(v, (list, tuple))}
    tgt_names = {int(v): k for k, v in tdj["labels"].items() if not isinstance(v, (list, tuple))}
    renamed = [f"{v}: '{tgt_names[v]}' in the target, '{src_names[v]}' in the source" for v in sorted(tgt_names)
               if v in src_names and tgt_names[v] != src_names[v]]
    if renamed:
        notes.append("Label names differ (" + "; ".join(renamed) + "); values are what is compared.")
    missing = sorted(known - declared - {0})
    if missing:
        notes.append(f"Source label value(s) {missing} are not labelled in the target: they are scored against an "
                     f"empty reference (Dice NaN where not predicted, 0 where predicted).")

    for case in target.cases:
        f = target.label_file(case)
        try:
            seg, _ = rw.read_seg(str(f))
        except Exception as e:
            raise UserError(f"cannot read label {f} with {reader_class.__name__}: {e}") from None
        if seg.shape[0] != 1:
            raise UserError(f"label {f} has {seg.shape[0]} channels; a label map must be a single-channel "
                            f"image of integer label values.")
        if case in image_shapes and tuple(seg.shape[1:]) != image_shapes[case]:
            raise UserError(f"label {f} has size {tuple(seg.shape[1:])} but its image has "
                            f"{image_shapes[case]}; the label must have the image's size.")
        values = set(np.unique(seg).astype(int).tolist())
        if not values <= allowed:
            raise UserError(f"label mismatch: {f} contains value(s) {sorted(values - allowed)} that the model of "
                            f"{source_name} does not predict (it knows {sorted(allowed)}). Map them onto the "
                            f"source's labels (e.g. 255 -> 1: `--label-map 255:1` of `nnunet-lmnet convert "
                            f"folder`).")
    return notes
