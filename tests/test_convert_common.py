"""Shared converter machinery: split files, default folds, staged output, mask decoding, the nnU-Net check."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import check_folds, raw_entries, verify_with_nnunet
from nnunet_lmnet.dataset_conversion.common import binarize, mask_plane, staged_dataset
from nnunet_lmnet.dataset_conversion.splits import (build_aliases, default_splits, make_splits, read_split_files,
                                                    resolve_splits)
from nnunet_lmnet.errors import UserError

CASES = [f"c{i}" for i in range(10)]
ALIASES = build_aliases({c: [f"orig ({c[1:]})"] for c in CASES})


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _folds(paths):
    return resolve_splits(read_split_files(paths), CASES, ALIASES, "test")


# ----------------------------------------------------------------------------------------------------- split files

def test_list_files_pair_into_folds_in_given_order(tmp_path):
    t1 = _write(tmp_path, "x_train1.txt", b"c0\r\nc1\r\nc2\r\n")  # CRLF
    v1 = _write(tmp_path, "x_val1.txt", b"\xef\xbb\xbfc3\n\nc4\n")  # BOM, blank line
    t2 = _write(tmp_path, "x_train2.txt", b"orig (5)\rc6\r")  # CR only, original names
    v2 = _write(tmp_path, "x_val2.txt", b"# held out\nc7\nimages/C8.png\n")  # comment, path + extension + case
    folds = _folds([t1, t2, v1, v2])
    assert folds == [{"train": ["c0", "c1", "c2"], "val": ["c3", "c4"]},
                     {"train": ["c5", "c6"], "val": ["c7", "c8"]}]


def test_single_lists_take_the_rest(tmp_path, capsys):
    val = _write(tmp_path, "test_vol.txt", b"c1\nc2\n")  # a lone 'test' list validates
    assert _folds([val]) == [{"train": [c for c in CASES if c not in ("c1", "c2")], "val": ["c1", "c2"]}]
    train = _write(tmp_path, "train.txt", b"\n".join(c.encode() for c in CASES[:7]))
    assert _folds([train]) == [{"train": CASES[:7], "val": CASES[7:]}]
    # validation lists of different folds: the rest of each trains
    parts = [_write(tmp_path, f"fold{k}_val.txt", "\n".join(CASES[k::2]).encode()) for k in range(2)]
    folds = _folds(parts)
    assert len(folds) == 2
    check_folds(folds, set(CASES))
    # train + val + test: the test ids are in neither list
    t = _write(tmp_path, "a_train.txt", b"c0\nc1\nc2\n")
    v = _write(tmp_path, "a_val.txt", b"c3\n")
    h = _write(tmp_path, "a_test.txt", b"c4\n")
    assert _folds([t, v, h]) == [{"train": ["c0", "c1", "c2"], "val": ["c3"]}]
    assert "neither for training nor for validation" in capsys.readouterr().out


@pytest.mark.parametrize("train_name, val_name", [
    ("trainset.txt", "valset.txt"), ("trainval.txt", "test.txt"), ("train.txt", "testset.txt"),
    ("Training_Set.txt", "Validation_Set.txt"), ("isic18_train1.txt", "isic18_val1.txt"),
    ("kvasir_TRAIN.txt", "kvasir_valid.txt"),
])
def test_usual_role_spellings_pair_into_one_fold(tmp_path, train_name, val_name, capsys):
    """Before: 'trainset'/'valset' had no role, so fold 0 trained on the 3 ids of valset and validated on 7."""
    train = _write(tmp_path, train_name, "\n".join(CASES[:7]).encode())
    val = _write(tmp_path, val_name, "\n".join(CASES[7:]).encode())
    assert _folds([val, train]) == [{"train": CASES[:7], "val": CASES[7:]}]
    assert "warning" not in capsys.readouterr().out


@pytest.mark.parametrize("files, match", [
    ({"cases.txt": b"c0\n"}, r"whether split file .*cases\.txt is a training or a validation list.*_train\.txt"),
    ({"tr.txt": b"c0\n", "ts.txt": b"c1\n"}, r"tr\.txt is a training or a validation list"),
    ({"trainval.txt": b"c0\nc1\n", "val.txt": b"c1\n"}, r"trainval list usually holds the val cases too"),
    ({"a_train.txt": b"c0\n", "b_val.txt": b"c1\n"}, r"'a_train\.txt' \(train\) and 'b_val\.txt' \(val/test\) "
                                                  r"do not pair up.*busi_train1\.txt and busi_val1\.txt"),
])
def test_ambiguous_split_names_say_how_to_rename(tmp_path, files, match):
    paths = [_write(tmp_path, name, data) for name, data in files.items()]
    with pytest.raises(UserError, match=match):
        make_splits(paths, CASES, ALIASES, "test")


def test_warns_when_a_fold_validates_on_more_cases_than_it_trains_on(tmp_path, capsys):
    train = _write(tmp_path, "x_train.txt", b"c0\nc1\nc2\n")
    val = _write(tmp_path, "x_val.txt", "\n".join(CASES[3:]).encode())
    _folds([train, val])
    assert "fold 0 (x_train.txt / x_val.txt) validates on 7 case(s) but trains on only 3" in capsys.readouterr().out


def test_nnunet_json_passes_through(tmp_path):
    folds = [{"train": ["c0", "c1"], "val": ["c2"]}, {"train": ["c2"], "val": ["orig (0)", "c1"]}]
    path = _write(tmp_path, "splits_final.json", json.dumps(folds).encode())
    assert _folds([path]) == [{"train": ["c0", "c1"], "val": ["c2"]}, {"train": ["c2"], "val": ["c0", "c1"]}]


@pytest.mark.parametrize("files, match", [
    ({"a_train.txt": b"c0\n", "a_val.txt": b"c0\nc1\n"}, r"1 case\(s\) are in both the train and the val list"),
    ({"val.txt": b"c0\nc99\n"}, r"val\.txt: 1 id\(s\) are not training cases .*'c99'"),
    ({"train_val.txt": b"c0\n"}, r"train_val\.txt.*contains"),
    ({"val1.txt": b"c0\n", "validation1.txt": b"c1\n"}, r"both look like the val list"),
    ({"s.json": b'[{"train": ["c0"]}]'}, "not in nnU-Net's splits_final.json format"),
    ({"s.json": b"[{"}, "cannot read split file .*s.json as JSON"),
    ({"s.json": b'[{"train": ["c0"], "val": ["c1"]}]', "val.txt": b"c2\n"}, "not both"),
    ({"train.txt": b"\n".join(c.encode() for c in CASES)}, "empty validation set"),
    ({"val.txt": b"\r\n"}, r"val\.txt holds no case ids"),
])
def test_bad_split_files(tmp_path, files, match):
    paths = []
    for name, data in files.items():
        paths.append(_write(tmp_path, name, data))
    with pytest.raises(UserError, match=match):
        make_splits(paths, CASES, ALIASES, "test")


def test_default_splits_are_deterministic_and_grouped():
    cases = [f"p{p}_s{s}" for p in range(7) for s in range(p + 1)]
    groups = {c: c.split("_")[0] for c in cases}
    folds = default_splits(cases, groups)
    assert folds == default_splits(list(reversed(cases)), groups)  # input order does not matter
    assert len(folds) == 5
    check_folds(folds, set(cases))
    for fold in folds:
        assert {groups[c] for c in fold["train"]}.isdisjoint(groups[c] for c in fold["val"])
    assert len(default_splits(cases[:3], {c: "p" for c in cases[:3]})) == 0  # one patient: no folds
    assert len(default_splits(CASES[:3])) == 3


# ---------------------------------------------------------------------------------------------------------- output

def test_staging_cleans_up_and_refuses_clashes(tmp_path, monkeypatch):
    source, raw = tmp_path / "src", tmp_path / "raw"
    source.mkdir()
    with pytest.raises(RuntimeError):
        with staged_dataset(source, raw, 7, "Thing", overwrite=False) as stage:
            (stage.dir / "half.txt").write_text("half-written")
            assert stage.dir.name.startswith(".Dataset007_Thing.")
            raise RuntimeError("worker died")
    assert raw_entries(raw) == set()

    with staged_dataset(source, raw, 7, "Thing", overwrite=False) as stage:
        (stage.dir / "dataset.json").write_text("{}")
    assert raw_entries(raw) == {"Dataset007_Thing"}
    with pytest.raises(UserError, match="Dataset007_Thing with dataset id 7"):
        with staged_dataset(source, raw, 7, "Other", overwrite=True):
            pass
    with pytest.raises(UserError, match="overlap"):
        with staged_dataset(source, source / "raw", 8, "Thing", overwrite=False):
            pass
    with pytest.raises(UserError, match="may only hold"):
        with staged_dataset(source, raw, 8, "bad name", overwrite=False):
            pass
    with pytest.raises(UserError, match="from 1 to 999"):
        with staged_dataset(source, raw, 1000, "Thing", overwrite=False):
            pass
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(UserError, match="nnUNet_raw is not set.*export nnUNet_raw="):
        with staged_dataset(source, None, 9, "Thing", overwrite=False):
            pass
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(UserError, match="does not exist and neither does its parent"):
        with staged_dataset(source, None, 9, "Thing", overwrite=False):
            pass
    assert raw_entries(raw) == {"Dataset007_Thing"}


# ------------------------------------------------------------------------------------------------------------ masks

def _decode(img: Image.Image, fmt: str = "PNG") -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


def _to_binary(img: Image.Image, lossy: bool = False) -> np.ndarray:
    return binarize(mask_plane(img, Path("m.png")), Path("m.png"), lossy)


def test_mask_modes():
    m = np.zeros((20, 30), np.uint8)
    m[5:15, 8:20] = 255
    truth = (m > 0).astype(np.uint8)
    assert np.array_equal(_to_binary(Image.fromarray(m)), truth)
    assert np.array_equal(_to_binary(Image.fromarray(truth)), truth)  # 0/1 masks stay as they are
    assert np.array_equal(_to_binary(_decode(Image.fromarray(np.dstack([m] * 3)), "JPEG"), lossy=True), truth)
    transparent = np.dstack([np.full_like(m, 255)] * 3 + [m])  # white, the lesion opaque on transparency
    assert np.array_equal(_to_binary(Image.fromarray(transparent)), truth)
    assert np.array_equal(_to_binary(Image.fromarray(m).convert("P")), truth)
    assert np.array_equal(_to_binary(Image.fromarray(m > 0)), truth)  # mode '1'


def test_masks_that_are_not_binary():
    with pytest.raises(UserError, match="unexpected label values in m.png: 0, 1, 2"):
        _to_binary(Image.fromarray(np.array([[0, 1, 2, 2]], np.uint8)))
    photo = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (16, 1))
    with pytest.raises(UserError, match="grey"):
        _to_binary(Image.fromarray(photo))
    colour = np.dstack([photo, photo[:, ::-1], photo])
    with pytest.raises(UserError, match="coloured pixels"):
        _to_binary(Image.fromarray(colour))


def test_nnunet_check_catches_a_broken_dataset(tmp_path):
    """The in-process nnU-Net check used by the converter tests really fails on bad data."""
    folder = tmp_path / "Dataset900_Broken"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "imagesTr" / "a_0000.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(folder / "labelsTr" / "a.png")  # 255 is no label
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "x"}, "labels": {"background": 0,
                                                     "fg": 1}, "numTraining": 1, "file_ending": ".png"}))
    with pytest.raises(RuntimeError, match="unexpected labels"):
        verify_with_nnunet(folder)
    shutil.rmtree(folder)


def test_warns_when_preprocessed_splits_differ(tmp_path, monkeypatch, capsys):
    from nnunet_lmnet.dataset_conversion.splits import warn_if_preprocessed_differs

    folds = [{"train": ["a", "b"], "val": ["c"]}]
    (tmp_path / "Dataset501_X").mkdir()
    (tmp_path / "Dataset501_X" / "splits_final.json").write_text(json.dumps(folds))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    warn_if_preprocessed_differs("Dataset501_X", folds)
    assert capsys.readouterr().out == ""
    warn_if_preprocessed_differs("Dataset501_X", [{"train": ["a"], "val": ["b", "c"]}])
    assert "nnU-Net will refuse to plan" in capsys.readouterr().out
