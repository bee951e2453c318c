"""Shared machinery for the dataset converters.

- Output staging: everything is written into a hidden folder next to the target
  (``.DatasetXXX_Name.<host>.<pid>.<rand>.tmp`` in ``$nnUNet_raw``) and renamed into place only after the last file
  is written, so an error, Ctrl-C, SIGTERM or SIGHUP never leaves a half-written dataset that nnU-Net could pick up.
  nnU-Net looks datasets up with the prefix ``DatasetXXX``, so the hidden name is invisible to it. What a SIGKILL
  leaves behind is recognised by the dead writer's pid and removed by the next conversion. One conversion per
  dataset id at a time (a lock file ``.DatasetXXX.lock``), and no id that nnU-Net already knows under another name
  (:mod:`.dataset_lock`).
- Source discovery: users point at the archive's top folder or at the folder inside it; :func:`locate` searches
  the given folder and up to two levels below it.
- Parallel map with a progress bar (spawn-safe: workers are top-level functions of the dataset modules).
- Image/mask decoding with errors that name the file (:class:`nnunet_lmnet.errors.UserError`).

Only the standard library is imported at module level: ``nnunet-lmnet``'s CLI imports this module at start-up.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import socket
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from nnunet_lmnet.errors import UserError
from nnunet_lmnet.signals import children_ignore_sigint, exit_on_signals

from .dataset_lock import check_id_free, dataset_id_lock, remove_stale_locks

# Default nnU-Net dataset ids and names (5xx: no clash with nnU-Net's own conversion scripts).
DEFAULTS: dict[str, tuple[int, str]] = {
    "kvasir": (501, "KvasirSEG"),
    "busi": (502, "BUSI"),
    "lgg": (503, "LGG"),
    "isic2018": (504, "ISIC2018"),
    "btcv": (505, "BTCV"),
    "kits23": (506, "KiTS23"),
    "lgg3d": (507, "LGG3D"),
    # zero-shot (LGMSNet Table 2) sources and targets; pranet-test: 511..515, one per subset (pranet_test.py)
    "tnscui2020": (508, "TNSCUI2020"),
    "tn3k": (509, "TN3K"),
    "ph2": (510, "PH2"),
    "pranet-test": (511, "CVC300"),
    "folder": (520, ""),  # convert folder: --name is required
}

# Small by default: the work is I/O and codec bound and every spawned worker pays its own imports.
DEFAULT_NUM_PROCESSES = max(1, min(4, os.cpu_count() or 1))

CONVERTED_BY = "nnunet-lmnet convert"

# Pixels that are neither near 0 nor near 255: a few are expected on edges of JPEG or resampled masks; many mean
# the file is not a binary mask.
_GREY_LOW, _GREY_HIGH, _MAX_GREY_FRACTION = 32, 223, 0.05


# ----------------------------------------------------------------------------------------------------- source

def check_source(source) -> Path:
    """The user's SOURCE as an absolute path; a clear error if it is missing, not a folder, or empty."""
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"SOURCE {path} does not exist. Point at the folder you extracted the download into.")
    if not path.is_dir():
        raise UserError(f"SOURCE {path} is a file, not a folder. Extract the archive first and point at the "
                        f"extracted folder.")
    if not any(p for p in path.iterdir() if not p.name.startswith(".")):
        raise UserError(f"SOURCE {path} is empty. Extract the download into it (or point at the folder that "
                        f"holds the extracted files).")
    return path.resolve()


def _visible_subdirs(path: Path) -> list[Path]:
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return []
    # __MACOSX holds resource forks that macOS adds to zip files; never data.
    return [p for p in entries if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"]


def locate(source: Path, is_root: Callable[[Path], bool], what: str, expected: str, max_depth: int = 2) -> Path:
    """Find the dataset folder at ``source`` or up to ``max_depth`` levels below it (breadth-first).

    The shallowest match wins, so a second copy deeper in the tree (LGG's nested ``lgg-mri-segmentation/
    kaggle_3m``) is never used. Two matches at the same depth are ambiguous and refused.
    """
    level = [source]
    for _ in range(max_depth + 1):
        found = [p for p in level if is_root(p)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(str(p) for p in found)
            raise UserError(f"SOURCE {source} holds several {what} folders ({names}). Point at one of them.")
        level = [c for p in level for c in _visible_subdirs(p)]
        if not level:
            break
    raise UserError(f"SOURCE {source} does not hold the {what} data: expected {expected} in it or up to "
                    f"{max_depth} level(s) below it. Check that you picked the right folder and converter.")


def list_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Visible files in ``folder`` whose name ends with one of ``suffixes`` (case-insensitive), sorted."""
    suffixes = tuple(s.lower() for s in suffixes)
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.name.lower().endswith(suffixes):
            continue
        check_link(p)
        if p.is_file():
            found.append(p)
    return found


def check_link(path: Path) -> None:
    """A symbolic link whose target is gone is an error naming both: skipping it would silently drop a case."""
    if path.is_symlink() and not path.exists():
        raise UserError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist (moved, deleted, "
                        f"or on a drive that is not mounted). Restore the target, or replace the link with the "
                        f"file, then run the command again.")


def pair_files(images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path,
               mask_pattern: str, mask_word: str = "mask") -> list[tuple[str, Path, Path]]:
    """Match images and masks by key; any unmatched file on either side is an error naming it."""
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        raise UserError(f"{len(no_mask)} image(s) in {image_dir} have no {mask_word} in {mask_dir} "
                        f"(expected {mask_pattern}): {preview(images[k].name for k in no_mask)}. "
                        f"Restore the missing {mask_word}s from the original download.")
    if no_image:
        raise UserError(f"{len(no_image)} {mask_word}(s) in {mask_dir} have no image in {image_dir}: "
                        f"{preview(masks[k].name for k in no_image)}. Restore the images or remove the stray "
                        f"{mask_word}s.")
    return [(k, images[k], masks[k]) for k in sorted(images)]


def safe_id(name: str) -> str:
    """A case id nnU-Net and every file system accept: characters other than letters, digits, '-' and '_' -> '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "case"


def preview(items, n: int = 5) -> str:
    """``'a', 'b', 'c' and 7 more``: for error messages about many files or ids."""
    items = list(items)
    text = ", ".join(repr(i) for i in items[:n])
    return text + (f" and {len(items) - n} more" if len(items) > n else "")


# ----------------------------------------------------------------------------------------------------- output

def raw_root(output_root=None) -> Path:
    """``output_root`` or ``$nnUNet_raw``; created if only the last level is missing."""
    if output_root is None:
        env = os.environ.get("nnUNet_raw")
        if not env:
            raise UserError("nnUNet_raw is not set. Set it to the folder that holds nnU-Net's raw datasets, "
                            "e.g. `export nnUNet_raw=/data/nnUNet_raw`, and run the command again.")
        root = Path(env).expanduser()
        origin = "nnUNet_raw"
    else:
        root = Path(output_root).expanduser()
        origin = "output_root"
    if root.exists() and not root.is_dir():
        raise UserError(f"{origin}={root} is a file, not a folder. Point it at a folder.")
    if not root.exists():
        if not root.parent.is_dir():
            raise UserError(f"{origin}={root} does not exist and neither does its parent. Create it or fix "
                            f"the path.")
        root.mkdir()
    return root.resolve()


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise UserError(f"dataset id must be an integer from 1 to 999 (nnU-Net folders are named "
                        f"DatasetXXX_Name), got {dataset_id!r}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name or ""):
        raise UserError(f"dataset name {name!r} may only hold letters, digits, '_' and '-' (it becomes part of "
                        f"a folder name nnU-Net parses).")
    return f"Dataset{dataset_id:03d}_{name}"


def _is_within(path: Path, other: Path) -> bool:
    try:
        path.resolve().relative_to(other.resolve())
        return True
    except ValueError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@dataclass
class Stage:
    """Where a conversion writes (``dir``, hidden) and where the result will appear (``target``)."""
    dir: Path
    target: Path

    @property
    def name(self) -> str:
        return self.target.name


@contextmanager
def staged_dataset(source: Path, output_root, dataset_id: int, name: str, overwrite: bool) -> Iterator[Stage]:
    """Yield a Stage; on success its hidden folder becomes ``<raw>/DatasetXXX_Name``, on any error it is deleted.

    The checks (existing target, id clash in ``$nnUNet_raw``, ``$nnUNet_preprocessed`` or ``$nnUNet_results``,
    source/target overlap) run before any work, so a refused conversion costs nothing, and again just before the
    final rename, so what appeared meanwhile is never replaced. A lock per dataset id, held throughout
    (:func:`dataset_id_lock`), stops a second conversion of the same id at once. Hidden folders that killed
    conversions left in the output root are removed first (:func:`clean_leftovers`).
    """
    root = raw_root(output_root)
    folder = dataset_folder_name(dataset_id, name)
    target = root / folder
    if _is_within(target, source) or _is_within(source, target):
        raise UserError(f"the output {target} and SOURCE {source} overlap. The source is never modified: put "
                        f"nnUNet_raw somewhere else.")
    with dataset_id_lock(root, dataset_id):
        clean_leftovers(root, folder)  # first: it may put back a dataset that a killed overwrite moved aside
        remove_stale_locks(root)
        check_id_free(root, dataset_id, folder)
        if _exists(target) and not overwrite:
            raise UserError(f"{target} already exists. Pass --overwrite (overwrite=True) to replace it, or choose "
                            f"another --dataset-id / --name.")
        tmp = root / _hidden_name(folder, "tmp")
        tmp.mkdir()
        with exit_on_signals():
            try:
                yield Stage(tmp, target)
                _recheck_before_rename(root, dataset_id, target, overwrite)
                _move_into_place(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _recheck_before_rename(root: Path, dataset_id: int, target: Path, overwrite: bool) -> None:
    """What another program (not a conversion: those wait for the lock) created while this one ran is kept."""
    when = " (it appeared while this conversion ran; nothing was written)"
    check_id_free(root, dataset_id, target.name, when)
    if _exists(target) and not overwrite:
        raise UserError(f"{target} appeared while this conversion ran, so nothing was written. Pass --overwrite "
                        f"(overwrite=True) to replace it, or choose another --dataset-id / --name.")


def _move_into_place(tmp: Path, target: Path) -> None:
    if not _exists(target):
        tmp.rename(target)
        return
    old = target.parent / _hidden_name(target.name, "old")
    target.rename(old)
    try:
        tmp.rename(target)
    except BaseException:
        old.rename(target)  # the previous version back in place: a failed overwrite changes nothing
        raise
    try:
        _remove(old)
    except OSError as e:
        print(f"warning: {target} is in place, but its previous version could not be deleted ({e}). It stays in "
              f"{old}; the next conversion into {target.parent} removes it, or delete it yourself.")


# ------------------------------------------------------------------------------------------- leftovers of kills

# .<DatasetXXX_Name>.<host>.<pid>.<random>.tmp|old: the writer's host and pid tell a later run whether the folder
# is still being written or was left by a killed run (SIGKILL, power loss). Folders of older versions lack both.
_HIDDEN = re.compile(r"\.(?P<folder>Dataset\d{3}_[A-Za-z0-9_-]+?)\.(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.)?"
                     r"[0-9a-f]{8}\.(?P<kind>tmp|old)")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-") or "host"


def _hidden_name(folder: str, kind: str) -> str:
    return f".{folder}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_leftovers(root: Path, folder: str) -> None:
    """Remove the hidden folders that conversions killed on this machine left in ``root``, saying so.

    A folder whose writer is still running is left alone (and is an error if it is writing ``folder``: two
    conversions of one dataset at once). A stale ``.old`` whose dataset is missing (killed while swapping) is put
    back. Folders from another host, or from versions that did not record their writer, are only reported.
    """
    for path in sorted(root.iterdir()):
        m = _HIDDEN.fullmatch(path.name)
        if m is None or not path.is_dir() or path.is_symlink():
            continue
        if m["pid"] is None or m["host"] != _host():
            where = "an older version" if m["pid"] is None else f"host {m['host']}"
            print(f"note: {path} was left by a conversion ({where}) that did not finish. Delete it if no "
                  f"conversion into {root} is running.")
            continue
        if _process_alive(int(m["pid"])):
            if m["folder"] == folder and int(m["pid"]) != os.getpid():
                raise UserError(f"another conversion (process {m['pid']}) is writing {root / folder} right now "
                                f"({path.name}). Wait for it to finish or stop it, then run this one again.")
            continue
        _clear_stale(path, root / m["folder"], m["kind"], m["pid"])


def _clear_stale(path: Path, dataset: Path, kind: str, pid: str) -> None:
    try:
        if kind == "old" and not (dataset.exists() or dataset.is_symlink()):
            path.rename(dataset)
            print(f"note: restored {dataset} from {path.name}, which a conversion (process {pid}) that was killed "
                  f"while replacing it had moved aside.")
            return
        shutil.rmtree(path)
        what = "temporary folder" if kind == "tmp" else "previous version"
        print(f"note: removed {path.name}, the {what} of {dataset.name} left by a conversion (process {pid}) that "
              f"was killed or crashed.")
    except OSError as e:
        print(f"warning: could not remove {path}, left by a killed conversion: {e}. Delete it yourself.")


def write_dataset_json(folder: Path, channel_names: dict, labels: dict, num_training: int, file_ending: str,
                       **kwargs) -> None:
    """dataset.json through nnU-Net's own writer (its ``citation`` argument is buggy: we pass ``reference``)."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    # generate_dataset_json edits the dicts in place.
    generate_dataset_json(str(folder), dict(channel_names), dict(labels), num_training, file_ending, **kwargs)


def verify_dataset(folder: Path, num_processes: int) -> None:
    """nnU-Net's own integrity check (as ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``) on the staged
    folder, so a dataset nnU-Net would reject never appears in ``$nnUNet_raw``."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    try:
        verify_dataset_integrity(str(folder), num_processes)
    except (AssertionError, RuntimeError, FileNotFoundError) as e:
        raise UserError(f"nnU-Net's dataset integrity check rejected the converted data ({e}; details above), so "
                        f"nothing was written. Please report this together with the message.") from None


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_case_mapping(folder: Path, source_root: Path, mapping: dict[str, Sequence[Path]]) -> None:
    """``case_mapping.json``: nnU-Net case id -> the source files it came from (relative to SOURCE's dataset root).

    nnU-Net ignores it; it keeps every output case traceable to the user's download.
    """
    rel = {case: [str(Path(p).relative_to(source_root)) for p in files] for case, files in sorted(mapping.items())}
    write_json(folder / "case_mapping.json", rel)


def report(target: Path, num_training: int, num_test: int, splits_note: str) -> None:
    test = f", {num_test} test image(s) in imagesTs" if num_test else ""
    print(f"Wrote {target}: {num_training} training case(s){test}; {splits_note}.")


# ------------------------------------------------------------------------------------------- parallel + progress

# The pid of the process that started this worker (set by _init_worker; None in the main process).
_parent_pid: int | None = None
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _init_worker(parent_pid: int) -> None:
    """Pool initializer: the worker dies with the process that started it, even when that one is SIGKILLed.

    Without this, a SIGKILLed parent's workers go on with their batch (up to 16 cases, minutes for large images),
    writing into the orphaned hidden folder, and only die when they send the result. Linux: the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere, and for a
    parent that died before this ran, the parent pid is checked here and before every case.
    """
    global _parent_pid
    _parent_pid = parent_pid
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl in this libc: the pid checks remain
    _exit_if_orphaned()


def _exit_if_orphaned() -> None:
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(1)  # the parent is gone: nobody will use what this worker writes


def _call_indexed(packed):
    func, index, task = packed
    _exit_if_orphaned()
    return index, func(task)


def parallel_map(func: Callable, tasks: Sequence, num_processes: int, desc: str) -> list:
    """``[func(t) for t in tasks]`` over a spawn pool of ``num_processes`` workers, with a progress bar.

    ``func`` must be a top-level function (spawn pickles it by name). The first failing task stops the pool and
    its error propagates. Workers die with this process, however it ends (:func:`_init_worker`).
    """
    from tqdm import tqdm

    if not isinstance(num_processes, int) or num_processes < 1:
        raise UserError(f"--num-processes must be a positive integer, got {num_processes!r}.")
    tasks = list(tasks)
    results: list = [None] * len(tasks)
    with tqdm(total=len(tasks), desc=desc, unit="case", file=sys.stderr, mininterval=0.5, leave=False) as bar:
        if num_processes == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                results[i] = func(task)
                bar.update()
        else:
            workers = min(num_processes, len(tasks))
            # Batches amortise inter-process traffic for many small cases and still balance large ones.
            chunksize = max(1, min(16, len(tasks) // (workers * 8)))
            with children_ignore_sigint():  # Ctrl-C: one message from this process, no traceback per worker
                pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                                 initargs=(os.getpid(),))
            with pool:
                packed = [(func, i, t) for i, t in enumerate(tasks)]
                for i, result in pool.imap_unordered(_call_indexed, packed, chunksize=chunksize):
                    results[i] = result
                    bar.update()
    return results


# ------------------------------------------------------------------------------------------------- 2D images

# EXIF Orientation (tag 0x0112): 1 = stored upright; 2-8 = mirror and/or rotate to display; 5-8 swap width/height.
_ORIENTATION_TAG = 0x0112
_ORIENTATION_TEXT = {2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "transposed", 6: "rotated 90° clockwise",
                     7: "transversed", 8: "rotated 90° counter-clockwise"}


def exif_orientation(img) -> int:
    """The EXIF Orientation of an opened PIL image (1 when absent or unreadable: shown as stored)."""
    try:
        value = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block: viewers ignore it too
        return 1
    return value if value in range(1, 9) else 1


def displayed_size(img) -> tuple[int, int]:
    """(width, height) as viewers show the image, i.e. after its EXIF orientation."""
    w, h = img.size
    return (h, w) if exif_orientation(img) in (5, 6, 7, 8) else (w, h)


def upright(img):
    """The image as viewers show it: its EXIF orientation applied to the pixels (the same rule for images and
    masks, so a pair drawn on what the annotator saw stays aligned)."""
    if exif_orientation(img) == 1:
        return img
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


def open_image(path: Path):
    """Decode an image fully (so truncation shows up here), upright (:func:`upright`), or raise a UserError naming
    the file."""
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), DecompressionBombError, ...
        raise UserError(f"cannot read {path}: {e}. The file is corrupt or not an image; extract it again from "
                        f"the original download.") from None
    return upright(img)


def file_orientation(path: Path) -> int:
    """EXIF Orientation of an image file (header only)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return exif_orientation(img)
    except Exception:
        return 1  # unreadable files are reported by the decoder, with the reason


def check_same_orientation(image_path: Path, mask_path: Path) -> None:
    """Image and mask must carry the same EXIF orientation: if only one is rotated, no rule can tell whether the
    mask was drawn on the stored pixels or on the rotated view (for a square image both fit)."""
    oi, om = file_orientation(image_path), file_orientation(mask_path)
    if oi != om:
        def text(o):
            return f"EXIF orientation {o} ({_ORIENTATION_TEXT[o]})" if o != 1 else "no EXIF rotation"

        raise UserError(f"orientation mismatch: {image_path} carries {text(oi)} but its mask {mask_path} carries "
                        f"{text(om)}. Both are read as viewers show them, so they would not line up. If the mask "
                        f"was drawn on the stored pixels, remove the tag (`exiftool -Orientation= FILE`, the pixels "
                        f"stay); if on the rotated view, store the tagged file rotated (PIL.ImageOps.exif_transpose, "
                        f"then save) so that neither needs a tag.")


def check_same_size(image_size, mask_size, image_path: Path, mask_path: Path) -> None:
    """Same EXIF orientation and the same (displayed) width and height."""
    check_same_orientation(image_path, mask_path)
    if tuple(image_size) != tuple(mask_size):
        raise UserError(f"size mismatch: image {image_path} is {image_size[0]}x{image_size[1]} but its mask "
                        f"{mask_path} is {mask_size[0]}x{mask_size[1]} (width x height). Replace the mask with "
                        f"the one from the original download.")


def mask_plane(img, path: Path):
    """One 2D intensity plane (float or uint8 numpy array, 0..255) from a mask in any PIL mode.

    Colour masks: the brightest channel (masks carry equal channels; JPEG noise differs slightly between
    them). Masks with alpha are composited onto black, which covers both "opaque white lesion on transparent
    background" and "alpha fully opaque".
    """
    import numpy as np

    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode == "L":
        return np.asarray(img)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        return arr * (255.0 / 65535.0) if arr.max() > 255 else arr
    if mode in ("LA", "RGB", "RGBA"):
        arr = np.asarray(img)
        colour = arr[..., :-1] if mode in ("LA", "RGBA") else arr
        if colour.shape[-1] == 3:
            spread = colour.max(-1).astype(np.int16) - colour.min(-1)
            if (spread > 48).mean() > 0.01:
                raise UserError(f"{path} has coloured pixels, so it is not a mask (masks are black/white). Check "
                                f"that the image and mask folders are not swapped.")
        plane = colour.max(-1)
        if mode in ("LA", "RGBA"):
            plane = plane * (arr[..., -1] / 255.0)
        return plane
    raise UserError(f"{path} uses the image mode {mode!r}, which is not a mask format this converter knows "
                    f"(expected a grey, RGB or RGBA 8-bit image).")


def binarize(plane, path: Path, lossy: bool):
    """uint8 {0,1} mask from a 0..255 plane: 0/1 masks kept, otherwise >127 with sanity checks.

    Lossless masks (PNG/TIFF) must be 0/255 or 0/1 up to a few edge pixels; lossy JPEG masks have ringing
    values near 0 and 255 that the threshold removes. Many grey pixels, or a lossless mask whose values stay
    below 128, mean the file is not a binary mask: an error, not a silent empty label.
    """
    import numpy as np

    top = float(plane.max()) if plane.size else 0.0
    if top <= 1:
        return (plane > 0).astype(np.uint8)
    if not lossy and top < 128:
        values = np.unique(plane)
        raise UserError(f"unexpected label values in {path}: {preview([v.item() for v in values], 8)}. A binary "
                        f"mask must hold 0/255 (or 0/1). Replace it with the original mask.")
    grey = float(((plane >= _GREY_LOW) & (plane <= _GREY_HIGH)).mean())
    if grey > _MAX_GREY_FRACTION:
        raise UserError(f"unexpected label values in {path}: {grey:.0%} of its pixels are grey (between "
                        f"{_GREY_LOW} and {_GREY_HIGH}), so it is not a binary 0/255 mask. Check that the file is "
                        f"the mask and not an image.")
    return (plane > 127).astype(np.uint8)


def load_binary_mask(path: Path, lossy: bool | None = None):
    """Read a mask file into a uint8 {0,1} array; ``lossy`` defaults to 'is it a JPEG'."""
    img = open_image(path)
    if lossy is None:
        lossy = path.suffix.lower() in (".jpg", ".jpeg")
    return binarize(mask_plane(img, path), path, lossy), img.size


def save_png(img, path: Path) -> None:
    img.save(path, format="PNG")


def save_label_png(mask, path: Path) -> None:
    from PIL import Image

    Image.fromarray(mask.astype("uint8"), mode="L").save(path, format="PNG")


# ------------------------------------------------------------------------------------------------ NIfTI helpers

def check_gzip_stream(path: Path) -> None:
    """Decompress a .gz file to the end without keeping it: catches truncated or corrupt downloads cheaply."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path} is corrupt or truncated ({e}). Download or extract it again.") from None


def load_nifti_header(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, ...
        raise UserError(f"cannot read {path} as NIfTI: {e}. Download or extract it again.") from None


def label_values(img, path: Path, allowed: Sequence[int]):
    """The integer values present in a NIfTI label; an error naming the file for values outside ``allowed``."""
    import numpy as np

    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise UserError(f"cannot read the voxels of {path}: {e}. Download or extract it again.") from None
    if data.dtype.kind == "u" and data.dtype.itemsize == 1:
        counts = np.bincount(data.ravel(), minlength=256)
        values = np.flatnonzero(counts)
    else:
        values = np.unique(data)
    allowed = set(allowed)
    bad = [v.item() for v in values if v != np.round(v) or int(v) not in allowed]
    if bad:
        raise UserError(f"unexpected label values in {path}: {preview(bad, 8)} (expected only "
                        f"{min(allowed)}..{max(allowed)}). Check that the file is a label map of this dataset.")
    return sorted(int(v) for v in values)


# nnU-Net's verify_dataset_integrity compares spacing, origin and direction with numpy.allclose at its defaults.
GEOMETRY_TOLERANCE = dict(rtol=1e-5, atol=1e-8)
_TOLERANCE_TEXT = "numpy.allclose with rtol=1e-5, atol=1e-8, as nnU-Net's verify_dataset_integrity"


def _fmt(values) -> str:
    """One line (messages are one line): nested lists rounded to 6 decimals, no negative zeros."""
    import numpy as np

    return str((np.round(np.asarray(values, dtype=float), 6) + 0.0).tolist())


def geometry(img) -> dict:
    """Spacing, direction (unit axis vectors, one column per array axis) and origin of a NIfTI image's 3D grid.

    From the affine nibabel reads (the sform when set, else the qform), the one nnU-Net's nibabel readers use; the
    qform as well when the header sets both, because SimpleITK (nnU-Net's default reader) may take either.
    """
    import numpy as np

    out = {"spacing": np.asarray(img.header.get_zooms()[:3], dtype=float)}
    affines = [("", img.affine)]
    header = img.header
    if int(header["qform_code"]) > 0 and int(header["sform_code"]) > 0:
        affines.append(("qform ", header.get_qform()))
    for prefix, affine in affines:
        linear = np.asarray(affine, dtype=float)[:3, :3]
        norms = np.linalg.norm(linear, axis=0)
        out[f"{prefix}direction"] = linear / np.where(norms > 0, norms, 1)
        out[f"{prefix}origin"] = np.asarray(affine, dtype=float)[:3, 3]
    return out


def check_same_geometry(image, label, image_path: Path, label_path: Path) -> None:
    """Image and label must share the voxel grid: shape, spacing, direction and origin (tolerance: nnU-Net's).

    A label with a flipped axis or a shifted origin but equal shape and spacing would otherwise convert silently
    and train misaligned: nnU-Net's own check only warns about direction and origin.
    """
    import numpy as np

    if tuple(image.shape[:3]) != tuple(label.shape[:3]):
        raise UserError(f"size mismatch: {image_path} has shape {tuple(image.shape)} but its label {label_path} "
                        f"has shape {tuple(label.shape)}. Replace the label with the matching file.")
    gi, gl = geometry(image), geometry(label)
    for key in ("spacing", "direction", "origin", "qform direction", "qform origin"):
        if key in gi and key in gl and not np.allclose(gi[key], gl[key], **GEOMETRY_TOLERANCE):
            what = {"spacing": "voxel spacing (mm)", "direction": "axis directions (columns)",
                    "origin": "origin (mm)"}[key.replace("qform ", "")]
            where = " in the qform of its header" if key.startswith("qform") else ""
            hint = ("the label's axes point elsewhere (a flipped or transposed label)" if "direction" in key
                    else "the label is shifted against the image" if "origin" in key else "")
            raise UserError(f"{key.replace('qform ', '')} mismatch{where}: {image_path} has {what} {_fmt(gi[key])} "
                            f"but its label {label_path} has {_fmt(gl[key])} (compared with {_TOLERANCE_TEXT} "
                            f"does){': ' + hint if hint else ''}. Trained as it is, the label would not lie on the "
                            f"image. Replace the label with the file that belongs to this image.")
