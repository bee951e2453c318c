"""TN-SCUI 2020 converter: upper-case .PNG, non-contiguous integer IDs, test images to imagesTs, LGMSNet split lists
(real bytes, CRLF), target mode, bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import SPLITS_DIR, load_png, needs_splits, raw_entries, tree_digest, verify_with_nnunet
from nnunet_lmnet.dataset_conversion.tnscui2020 import convert_tnscui2020
from zero_shot_fixtures import make_tnscui, refused

IDS = (2, 4, 12)


@pytest.fixture
def tnscui(tmp_path):
    truth = make_tnscui(tmp_path / "download", IDS)
    return tmp_path / "download", truth, tmp_path / "raw"


def test_converts_training_and_test_images(tnscui):
    source, truth, raw = tnscui
    train = source / "TNSCUI2020_train"
    assert sorted(p.name for p in (train / "image").iterdir()) == ["12.PNG", "2.PNG", "4.PNG"]
    before = tree_digest(source)
    out = convert_tnscui2020(source, output_root=raw, num_processes=1)

    assert out == raw / "Dataset508_TNSCUI2020" and raw_entries(raw) == {out.name}
    assert tree_digest(source) == before
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["TNSCUI_12.png", "TNSCUI_2.png", "TNSCUI_4.png"]
    for n in IDS:
        image = load_png(out / "imagesTr" / f"TNSCUI_{n}_0000.png")
        assert image.ndim == 2 and np.array_equal(image, np.asarray(Image.open(train / "image" / f"{n}.PNG")))
        assert image[0].max() == 0  # the black border is kept
        assert np.array_equal(load_png(out / "labelsTr" / f"TNSCUI_{n}.png"), truth[f"TNSCUI_{n}"].astype(np.uint8))
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == ["TNSCUI_test_1_0000.png",
                                                                     "TNSCUI_test_2_0000.png"]
    assert not (out / "labelsTs").exists()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "ultrasound"} and meta["labels"] == {"background": 0, "nodule": 1}
    assert meta["numTraining"] == 3
    assert json.loads((out / "case_mapping.json").read_text())["TNSCUI_12"] == ["TNSCUI2020_train/image/12.PNG",
                                                                               "TNSCUI2020_train/mask/12.PNG"]
    verify_with_nnunet(out)


@needs_splits
def test_lgmsnet_split_lists(tmp_path):
    """The first ids of each published list, bytes as published (CRLF, bare integers, 'tuscui_' names)."""
    folder = SPLITS_DIR / "tnscui_lgmsnet_3x70-30"
    lists, expected, ids = tmp_path / "lists", [], set()
    lists.mkdir()
    for k in (1, 2, 3):
        fold = {}
        for role, n in (("train", 8), ("val", 4)):
            data = (folder / f"tuscui_{role}{k}.txt").read_bytes()
            assert b"\r\n" in data
            head = b"".join(line + b"\r\n" for line in data.split(b"\r\n")[:n])
            (lists / f"tuscui_{role}{k}.txt").write_bytes(head)
            fold[role] = sorted(f"TNSCUI_{int(i)}" for i in head.split())
            ids |= {int(i) for i in head.split()}
        expected.append(fold)
    make_tnscui(tmp_path / "dl", sorted(ids), tests=())
    out = convert_tnscui2020(tmp_path / "dl" / "TNSCUI2020_train", output_root=tmp_path / "raw", num_processes=1,
                             splits=sorted(lists.iterdir()))
    folds = json.loads((out / "splits_final.json").read_text())
    assert [{"train": f["train"], "val": f["val"]} for f in folds] == expected
    assert not (out / "imagesTs").exists()


def test_as_zero_shot_target(tnscui, capsys):
    source, truth, raw = tnscui
    out = convert_tnscui2020(source, output_root=raw, num_processes=1, mode="target", verify=True)
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == ["TNSCUI_12.png", "TNSCUI_2.png", "TNSCUI_4.png"]
    assert len(list((out / "imagesTs").iterdir())) == 3  # the unlabelled test images are left out...
    assert "2 TN-SCUI 2020 image(s) without masks were left out" in capsys.readouterr().out  # ...with a note
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 0


def test_missing_mask_and_stray_file(tnscui):
    source, _, raw = tnscui
    mask = source / "TNSCUI2020_train" / "mask" / "4.PNG"
    mask.rename(source / "kept.PNG")
    refused(convert_tnscui2020, r"have no mask.*'4\.PNG'", raw, source)
    (source / "kept.PNG").rename(mask)
    (source / "TNSCUI2020_train" / "image" / "4 copy.PNG").write_bytes(b"")
    refused(convert_tnscui2020, r"unexpected file .*4 copy\.PNG", raw, source)


def test_size_mismatch(tnscui):
    source, _, raw = tnscui
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(source / "TNSCUI2020_train" / "mask" / "12.PNG")
    refused(convert_tnscui2020, r"size mismatch.*12\.PNG", raw, source)


def test_unknown_label_value(tnscui):
    source, _, raw = tnscui
    path = source / "TNSCUI2020_train" / "mask" / "2.PNG"
    w, h = Image.open(path).size
    Image.fromarray((np.arange(w * h).reshape(h, w) % 3).astype(np.uint8)).save(path)
    refused(convert_tnscui2020, r"unexpected label values in .*2\.PNG", raw, source)


def test_existing_target_and_wrong_source(tnscui, tmp_path):
    source, _, raw = tnscui
    convert_tnscui2020(source, output_root=raw, num_processes=1)
    refused(convert_tnscui2020, "already exists.*--overwrite", raw, source)
    (tmp_path / "tn3k" / "test-image").mkdir(parents=True)
    (tmp_path / "tn3k" / "test-image" / "0000.jpg").write_bytes(b"")
    refused(convert_tnscui2020, "does not hold the TN-SCUI 2020 data", raw, tmp_path / "tn3k")
