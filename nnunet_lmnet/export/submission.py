"""`nnunet-lmnet export-submission`: nnU-Net predictions -> a challenge's submission folder.

Covered challenges (the naming and value rules below are what the exporter writes and checks):

``isic2018``  ISIC 2018 Task 1 (lesion boundary segmentation). One ``ISIC_<7-digit id>_segmentation.png`` per test
              image: single-channel 8-bit PNG, 0 = background, 255 = lesion, exactly the size of the input image.
              Predictions must hold labels 0/1 (nnU-Net's 2D PNG predictions are not resampled, so they already
              have the input size; ``--reference-images`` verifies it). The case id must contain the ISIC id
              (``ISIC_0012345``) or be the 7 digits. Masks with several connected components or no lesion are
              counted in the report but not changed (the challenge asks for one contiguous region). For datasets
              converted with ``--max-size`` (downscaled images), ``--resize-to-reference`` scales each mask back
              to its image's size with nearest-neighbour interpolation (aspect ratio checked).
``kits23``    KiTS23. One ``case_<5 digits>.nii.gz`` per test case with labels 0 background, 1 kidney, 2 tumor,
              3 cyst, in the geometry of the test image. nnU-Net writes predictions in the input geometry, so the
              files are copied byte for byte; ``--reference-images`` (flat ``case_XXXXX[_0000].nii.gz`` files or
              the KiTS layout ``case_XXXXX/imaging.nii.gz``) checks shape and affine (within 1e-3) the way the
              organisers' ``check_submission_folder`` does.
``btcv``      BTCV / Synapse "Multi-Atlas Labeling Beyond the Cranial Vault", abdomen: one ``label<4 digits>.nii.gz``
              per test image ``img<4 digits>.nii.gz`` with labels 0..13, copied byte for byte. The name follows
              the challenge's training label files; the leaderboard's current upload rules could not be checked,
              so confirm them and use ``--name-template`` if they differ.
``generic``   Any nnU-Net output: files copied unchanged under their own names; ``--labels`` restricts the values,
              ``--reference-images`` checks completeness and sizes with nnU-Net's reader.

Common rules: PRED_DIR is only read. OUT_DIR is assembled in a temporary folder beside it and renamed into place at
the end; an existing non-empty OUT_DIR is refused unless ``--overwrite``, and even then only when it holds nothing
but files of the kind this exporter writes. Unexpected label values, non-integer labels, missing or extra cases and
wrong sizes stop the export with a message listing the files.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..nnunet_paths import load_json_file
from ..report_output import same_or_inside

IMAGE_ENDINGS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_LISTED = 10


@dataclass(frozen=True)
class Challenge:
    name: str
    default_ending: str | None      # prediction file ending when PRED_DIR has no dataset.json
    out_ending: str | None          # None: same as the prediction
    labels: frozenset | None        # allowed label values (None: no check)
    kind: str                       # 'isic-png' | 'nifti-copy' | 'copy'


CHALLENGES = {
    "isic2018": Challenge("isic2018", ".png", ".png", frozenset({0, 1}), "isic-png"),
    "kits23": Challenge("kits23", ".nii.gz", ".nii.gz", frozenset({0, 1, 2, 3}), "nifti-copy"),
    "btcv": Challenge("btcv", ".nii.gz", ".nii.gz", frozenset(range(14)), "nifti-copy"),
    "generic": Challenge("generic", None, None, None, "copy"),
}


# ------------------------------------------------------------------------------------------------------- naming
def _last_number(case: str) -> int | None:
    m = re.findall(r"\d+", case)
    return int(m[-1]) if m else None


def _isic_name(case: str) -> str:
    m = re.search(r"ISIC_(\d{7})(?!\d)", case) or re.fullmatch(r"(\d{7})", case)
    if not m:
        raise UserError(f"case '{case}' has no ISIC image id: name the nnU-Net cases ISIC_<7 digits> (as the "
                        f"challenge images) or pass --name-template.")
    return f"ISIC_{m.group(1)}_segmentation.png"


def _kits_name(case: str) -> str:
    m = re.search(r"case_(\d{5})(?!\d)", case)
    num = int(m.group(1)) if m else _last_number(case)
    if num is None:
        raise UserError(f"case '{case}' has no case number for KiTS23 (case_XXXXX); pass --name-template.")
    return f"case_{num:05d}.nii.gz"


def _btcv_name(case: str) -> str:
    num = _last_number(case)
    if num is None:
        raise UserError(f"case '{case}' has no image number for BTCV (img0061 -> label0061.nii.gz); "
                        f"pass --name-template.")
    return f"label{num:04d}.nii.gz"


def _template_name(template: str) -> Callable[[str], str]:
    def name(case: str) -> str:
        num = _last_number(case)
        if "{num" in template and num is None:
            raise UserError(f"--name-template uses {{num}} but case '{case}' has no number.")
        try:
            out = template.format(case=case, num=num if num is not None else 0)
        except (KeyError, IndexError, ValueError) as e:
            raise UserError(f"--name-template '{template}' is not valid: {e}. Use {{case}} and/or {{num}}, "
                            f"e.g. 'label{{num:04d}}.nii.gz'.") from None
        if not out or "/" in out or "\\" in out or out in (".", ".."):
            raise UserError(f"--name-template '{template}' gives '{out}' for case '{case}', which is not a file "
                            f"name.")
        return out

    return name


def _namer(ch: Challenge, file_ending: str, template: str | None) -> Callable[[str], str]:
    if template:
        return _template_name(template)
    if ch.name == "isic2018":
        return _isic_name
    if ch.name == "kits23":
        return _kits_name
    if ch.name == "btcv":
        return _btcv_name
    return lambda case: case + file_ending


def _strip_ending(name: str, endings) -> str | None:
    for e in sorted(endings, key=len, reverse=True):
        if name.lower().endswith(e.lower()):
            return name[: -len(e)]
    return None


# ------------------------------------------------------------------------------------------------------- reading
def _reader_for(pred_dir: Path, file_ending: str):
    from nnunetv2.imageio.reader_writer_registry import (determine_reader_writer_from_dataset_json,
                                                         determine_reader_writer_from_file_ending)

    try:
        if (pred_dir / "dataset.json").is_file():
            dj = load_json_file(pred_dir / "dataset.json", "dataset.json")
            dj = {**dj, "file_ending": file_ending}
            return determine_reader_writer_from_dataset_json(dj, None, verbose=False)
        return determine_reader_writer_from_file_ending(file_ending, None, verbose=False)
    except RuntimeError:
        raise UserError(f"nnU-Net has no reader for '{file_ending}' files; pass --file-ending with the ending of "
                        f"the prediction files.") from None


def _labels_problem(values, allowed) -> str | None:
    import numpy as np

    vals = np.unique(values)
    if vals.dtype.kind == "f":
        if not np.all(np.isfinite(vals)) or not np.all(vals == np.round(vals)):
            return "non-integer values (a probability map?)"
        vals = vals.astype(np.int64)
    if allowed is not None:
        bad = sorted(int(v) for v in vals if int(v) not in allowed)
        if bad:
            return f"unexpected label values {bad} (allowed: {sorted(allowed)})"
    return None


def _nifti(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as e:
        raise UserError(f"cannot read {path} as NIfTI: {e}") from None


# ------------------------------------------------------------------------------------------------------- references
def _reference_files(ch: Challenge, ref_dir: Path, namer, file_ending: str) -> dict[str, Path]:
    """Output file name -> reference image, for every image in the reference folder."""
    if not ref_dir.is_dir():
        raise UserError(f"--reference-images {ref_dir} is not a folder.")
    refs: dict[str, Path] = {}
    candidates: list[tuple[str, Path]] = []
    if ch.kind == "isic-png":
        for p in sorted(ref_dir.iterdir()):
            stem = _strip_ending(p.name, IMAGE_ENDINGS)
            if p.is_file() and stem and "_segmentation" not in stem.lower() and "superpixels" not in stem.lower():
                candidates.append((re.sub(r"_0000$", "", stem), p))
    elif ch.kind == "nifti-copy":
        for p in sorted(ref_dir.iterdir()):
            if p.is_file() and p.name.endswith(".nii.gz"):
                stem = p.name[: -len(".nii.gz")]
                if re.search(r"_\d{4}$", stem) and not stem.endswith("_0000"):
                    continue  # further input channels of an nnU-Net-named image
                candidates.append((re.sub(r"_0000$", "", stem), p))
            elif p.is_dir() and (p / "imaging.nii.gz").is_file():  # KiTS layout case_XXXXX/imaging.nii.gz
                candidates.append((p.name, p / "imaging.nii.gz"))
    else:
        for p in sorted(ref_dir.iterdir()):
            stem = _strip_ending(p.name, [file_ending])
            if p.is_file() and stem is not None:
                if re.search(r"_\d{4}$", stem) and not stem.endswith("_0000"):
                    continue
                candidates.append((re.sub(r"_0000$", "", stem), p))
    for case, p in candidates:
        try:
            name = namer(case)
        except UserError:
            continue  # not an image of this challenge (e.g. a stray file)
        if name in refs:
            raise UserError(f"--reference-images has two images for {name}: {refs[name]} and {p}.")
        refs[name] = p
    if not refs:
        raise UserError(f"--reference-images {ref_dir} holds no image that matches the {ch.name} naming.")
    return refs


def _shape_problem(ch: Challenge, pred_shape, ref_path: Path, pred_path: Path, reader) -> str | None:
    import numpy as np

    if ch.kind == "isic-png":
        from PIL import Image

        try:
            with Image.open(ref_path) as im:
                w, h = im.size
        except Exception as e:
            raise UserError(f"cannot read reference image {ref_path}: {e}") from None
        if tuple(pred_shape) != (h, w):
            return f"size {pred_shape[1]}x{pred_shape[0]} but the image {ref_path.name} is {w}x{h} (width x height)"
        return None
    if ch.kind == "nifti-copy":
        ref, pred = _nifti(ref_path), _nifti(pred_path)
        if tuple(ref.shape[:3]) != tuple(pred.shape[:3]):
            return f"shape {tuple(pred.shape)} but the image {ref_path.name} has {tuple(ref.shape)}"
        if float(np.abs(ref.affine - pred.affine).sum()) > 1e-3:
            return f"affine differs from the image {ref_path.name} (not in the original geometry)"
        return None
    try:
        img, _ = reader().read_images((str(ref_path),))
    except Exception as e:
        raise UserError(f"cannot read reference image {ref_path}: {e}") from None
    if tuple(img.shape[1:]) != tuple(pred_shape):
        return f"shape {tuple(pred_shape)} but the image {ref_path.name} has {tuple(img.shape[1:])}"
    return None


# ------------------------------------------------------------------------------------------------------- output
def _check_replaceable(out_dir: Path, out_ending: str | None) -> None:
    foreign = [p.name for p in out_dir.iterdir()
               if not p.is_file() or p.is_symlink() or (out_ending and not p.name.endswith(out_ending))]
    if foreign:
        raise UserError(f"{out_dir} holds files that export-submission does not write ({', '.join(foreign[:5])}); "
                        f"refusing to replace it even with --overwrite. Choose another OUT_DIR.")


def _replace_dir(tmp_dir: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    try:
        os.replace(tmp_dir, out_dir)
    except OSError:
        if old is not None:
            os.replace(old / out_dir.name, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_zip(out_dir: Path, zip_path: Path) -> None:
    import zipfile

    from ..report_output import atomic_path

    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(out_dir.iterdir()):
                zf.write(p, arcname=p.name)


def _isic_png(mask, target: Path, size: tuple[int, int] | None = None) -> None:
    """Write a 0/255 8-bit grayscale PNG; ``size`` (width, height): nearest-neighbour rescale first."""
    import numpy as np
    from PIL import Image

    im = Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L")
    if size is not None and im.size != tuple(size):
        im = im.resize(tuple(size), Image.Resampling.NEAREST)
    im.save(target, format="PNG")


def _isic_resize_target(pred_shape, ref_path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) of the reference image, or a problem when the mask is not a scaled copy of its shape."""
    from PIL import Image

    try:
        with Image.open(ref_path) as im:
            w, h = im.size
    except Exception as e:
        raise UserError(f"cannot read reference image {ref_path}: {e}") from None
    ph, pw = int(pred_shape[0]), int(pred_shape[1])
    scale = max(w, h) / max(pw, ph)
    if abs(pw * scale - w) > scale + 1 or abs(ph * scale - h) > scale + 1:
        return None, (f"size {pw}x{ph} is not a scaled copy of the image {ref_path.name} ({w}x{h}, width x "
                      f"height): another aspect ratio")
    return (w, h), None


# ------------------------------------------------------------------------------------------------------- entry point
def export_submission(challenge: str, pred_dir: Path, out_dir: Path, reference_images: Path | None = None,
                      overwrite: bool = False, make_zip: bool = False, file_ending: str | None = None,
                      labels: list[int] | None = None, name_template: str | None = None,
                      resize_to_reference: bool = False) -> str:
    import numpy as np

    if challenge not in CHALLENGES:
        raise UserError(f"unknown challenge '{challenge}'; choose one of {', '.join(CHALLENGES)}.")
    ch = CHALLENGES[challenge]
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    if not pred_dir.is_dir():
        raise UserError(f"PRED_DIR {pred_dir} is not a folder.")
    if same_or_inside(out_dir, pred_dir) or same_or_inside(pred_dir, out_dir):
        raise UserError(f"OUT_DIR {out_dir} must be outside PRED_DIR {pred_dir} (and not contain it).")
    zip_path = out_dir.parent / (out_dir.name + ".zip")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UserError(f"OUT_DIR {out_dir} exists and is not a folder.")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise UserError(f"OUT_DIR {out_dir} already exists and is not empty. Pass --overwrite to replace "
                                f"it, or choose another folder.")
    if make_zip and zip_path.exists() and not overwrite:
        raise UserError(f"{zip_path} already exists. Pass --overwrite to replace it.")

    if file_ending is None and (pred_dir / "dataset.json").is_file():
        file_ending = load_json_file(pred_dir / "dataset.json", "dataset.json").get("file_ending")
    file_ending = file_ending or ch.default_ending
    if not file_ending:
        raise UserError(f"cannot tell the prediction file ending: {pred_dir}/dataset.json is missing. Pass "
                        f"--file-ending (e.g. .nii.gz).")
    if ch.kind in ("isic-png",) and file_ending.lower() not in IMAGE_ENDINGS:
        raise UserError(f"{ch.name} needs 2D image predictions, but the prediction files end with {file_ending}.")
    if resize_to_reference and (ch.kind != "isic-png" or reference_images is None):
        raise UserError("--resize-to-reference is for isic2018 and needs --reference-images (the original "
                        "images whose sizes the masks are scaled to).")
    if ch.kind == "nifti-copy" and file_ending != ".nii.gz":
        raise UserError(f"{ch.name} expects .nii.gz label maps, but the predictions end with {file_ending}; "
                        f"predict with a dataset whose file_ending is .nii.gz.")
    out_ending = ch.out_ending or file_ending
    if name_template:
        out_ending = None  # the template decides the file name; only plain files are accepted in an old OUT_DIR
    if out_dir.exists() and any(out_dir.iterdir()):
        _check_replaceable(out_dir, out_ending)

    allowed = ch.labels if labels is None else frozenset(int(v) for v in labels)
    preds = sorted(p for p in pred_dir.iterdir() if p.is_file() and p.name.endswith(file_ending))
    if not preds:
        raise UserError(f"no *{file_ending} prediction files in {pred_dir}.")
    namer = _namer(ch, file_ending, name_template)
    names: dict[str, Path] = {}
    for p in preds:
        name = namer(p.name[: -len(file_ending)])
        if name in names:
            raise UserError(f"{names[name].name} and {p.name} would both be written as {name}.")
        names[name] = p

    reader = None if ch.kind == "nifti-copy" else _reader_for(pred_dir, file_ending)
    refs = _reference_files(ch, Path(reference_images), namer, file_ending) if reference_images else None
    if refs is not None:
        missing = sorted(set(refs) - set(names))
        extra = sorted(set(names) - set(refs))
        if missing:
            raise UserError(f"{len(missing)} reference image(s) have no prediction in {pred_dir}: "
                            f"{', '.join(refs[m].name for m in missing[:MAX_LISTED])}"
                            f"{' ...' if len(missing) > MAX_LISTED else ''}. Predict all test cases first.")
        if extra:
            raise UserError(f"{len(extra)} prediction(s) have no image in {reference_images}: "
                            f"{', '.join(names[e].name for e in extra[:MAX_LISTED])}"
                            f"{' ...' if len(extra) > MAX_LISTED else ''}. Are these the predictions of this "
                            f"test set?")

    problems: list[str] = []
    multi_component, empty, resized = [], [], []
    found_labels: set[int] = set()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for name, p in names.items():
            if ch.kind == "nifti-copy":
                arr = np.asanyarray(_nifti(p).dataobj)
            else:
                try:
                    seg, _ = reader().read_seg(str(p))
                except Exception as e:
                    raise UserError(f"cannot read prediction {p}: {e}") from None
                arr = seg[0]
                if ch.kind == "isic-png":
                    arr = arr.reshape(arr.shape[-2:]) if arr.ndim == 3 and arr.shape[0] == 1 else arr
                    if arr.ndim != 2:
                        problems.append(f"{p.name}: not a 2D image (shape {tuple(seg.shape)})")
                        continue
            issue = _labels_problem(arr, allowed)
            if issue:
                problems.append(f"{p.name}: {issue}")
                continue
            found_labels.update(int(v) for v in np.unique(arr))
            target_size = None
            if refs is not None:
                if resize_to_reference:
                    target_size, issue = _isic_resize_target(arr.shape, refs[name])
                else:
                    issue = _shape_problem(ch, arr.shape, refs[name], p, reader)
                    if issue and ch.kind == "isic-png":
                        issue += (" (if the dataset was converted with --max-size, pass --resize-to-reference to "
                                  "scale the masks back to the image size)")
                if issue:
                    problems.append(f"{p.name}: {issue}")
                    continue
            if problems:
                continue  # keep validating, stop writing
            target = tmp_dir / name
            if ch.kind == "isic-png":
                from scipy.ndimage import label as cc_label

                n_cc = cc_label(arr > 0)[1]
                if n_cc == 0:
                    empty.append(name)
                elif n_cc > 1:
                    multi_component.append(name)
                _isic_png(arr, target, target_size)
                if target_size is not None and target_size != (arr.shape[1], arr.shape[0]):
                    resized.append(name)
            else:
                shutil.copyfile(p, target)
        if problems:
            raise UserError(f"{len(problems)} prediction(s) cannot be exported as {ch.name}:\n  "
                            + "\n  ".join(problems[:MAX_LISTED])
                            + (f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED
                               else ""))
        _replace_dir(tmp_dir, out_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    if make_zip:
        _write_zip(out_dir, zip_path)

    lines = [f"Exported {len(names)} case(s) as {ch.name} to {out_dir}"
             + (f" (and {zip_path})" if make_zip else "") + ".",
             f"Label values found: {sorted(found_labels)}"
             + ("; written as 0/255" if ch.kind == "isic-png" else "") + ".",
             "Checked against the reference images: completeness and size"
             + (" and affine" if ch.kind == "nifti-copy" else "") + "." if refs is not None else
             "Not checked against reference images (pass --reference-images to check completeness and sizes)."]
    if multi_component:
        lines.append(f"Note: {len(multi_component)} mask(s) have more than one connected component (ISIC asks for "
                     f"one contiguous region; left unchanged): {', '.join(multi_component[:MAX_LISTED])}.")
    if resized:
        lines.append(f"Note: {len(resized)} mask(s) were rescaled (nearest neighbour) to their image's size.")
    if empty:
        lines.append(f"Note: {len(empty)} mask(s) contain no lesion: {', '.join(empty[:MAX_LISTED])}.")
    return "\n".join(lines)
