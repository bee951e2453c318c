"""PH2 converter: nested BMP layout (1-bit and RGB masks, _roi and .jpg decoys), flat copy, target/training modes,
bad inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import load_png, raw_entries, tree_digest, verify_with_nnunet
from nnunet_lmnet.dataset_conversion.ph2 import convert_ph2
from zero_shot_fixtures import make_ph2, refused

IDS = ("IMD002", "IMD003", "IMD010")


@pytest.fixture
def ph2(tmp_path):
    truth = make_ph2(tmp_path / "download", IDS)
    return tmp_path / "download", truth, tmp_path / "raw"


def _case(source, cid):
    return source / "PH2Dataset" / "PH2 Dataset images" / cid


def test_converts_as_zero_shot_target(ph2):
    source, truth, raw = ph2
    assert Image.open(_case(source, "IMD003") / "IMD003_lesion" / "IMD003_lesion.bmp").mode == "1"
    assert Image.open(_case(source, "IMD002") / "IMD002_lesion" / "IMD002_lesion.bmp").mode == "RGB"
    before = tree_digest(source)
    out = convert_ph2(source, output_root=raw, num_processes=1, verify=True)

    assert out == raw / "Dataset510_PH2" and raw_entries(raw) == {out.name}
    assert tree_digest(source) == before
    assert not (out / "imagesTr").exists() and not (out / "splits_final.json").exists()
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [f"PH2_{i}_0000.png" for i in IDS]
    assert sorted(p.name for p in (out / "labelsTs").iterdir()) == [f"PH2_{i}.png" for i in IDS]
    for cid in IDS:
        image = load_png(out / "imagesTs" / f"PH2_{cid}_0000.png")
        bmp = np.asarray(Image.open(_case(source, cid) / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp"))
        assert image.shape == bmp.shape and image.shape[-1] == 3 and np.array_equal(image, bmp)
        # the lesion mask, not the _roi colour-class mask or the stray .jpg (both hold the inverse shape)
        assert np.array_equal(load_png(out / "labelsTs" / f"PH2_{cid}.png"), truth[f"PH2_{cid}"].astype(np.uint8))
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 0 and meta["file_ending"] == ".png"
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"}  # as convert isic2018
    assert meta["labels"] == {"background": 0, "lesion": 1} and meta["pairs_with"] == "isic2018"
    mapping = json.loads((out / "case_mapping.json").read_text())
    assert mapping["PH2_IMD002"] == ["PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp",
                                     "PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp"]


def test_flat_copy_as_training_dataset(tmp_path):
    truth = make_ph2(tmp_path / "dl", IDS, flat=True)
    out = convert_ph2(tmp_path / "dl", output_root=tmp_path / "raw", num_processes=1, mode="training",
                      dataset_id=590)
    assert out.name == "Dataset590_PH2"
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"PH2_{i}.png" for i in IDS]
    assert np.array_equal(load_png(out / "labelsTr" / "PH2_IMD002.png"), truth["PH2_IMD002"].astype(np.uint8))
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3
    assert len(json.loads((out / "splits_final.json").read_text())) == 3
    verify_with_nnunet(out)


def test_images_folder_as_source(ph2):
    source, _, raw = ph2
    out = convert_ph2(source / "PH2Dataset" / "PH2 Dataset images", output_root=raw, num_processes=1)
    assert len(list((out / "labelsTs").iterdir())) == 3


def test_missing_mask(ph2):
    source, _, raw = ph2
    (_case(source, "IMD003") / "IMD003_lesion" / "IMD003_lesion.bmp").unlink()
    refused(convert_ph2, r"have no mask.*IMD003_lesion\.bmp", raw, source)


def test_size_mismatch(ph2):
    source, _, raw = ph2
    Image.new("1", (20, 20)).save(_case(source, "IMD010") / "IMD010_lesion" / "IMD010_lesion.bmp")
    refused(convert_ph2, r"size mismatch.*IMD010_lesion\.bmp", raw, source)


def test_unknown_label_value(ph2):
    source, _, raw = ph2
    path = _case(source, "IMD003") / "IMD003_lesion" / "IMD003_lesion.bmp"
    w, h = Image.open(path).size
    Image.fromarray((np.arange(w * h).reshape(h, w) % 3).astype(np.uint8)).save(path)  # values 0, 1, 2
    refused(convert_ph2, r"unexpected label values in .*IMD003_lesion\.bmp", raw, source)


def test_existing_target_needs_overwrite(ph2):
    source, _, raw = ph2
    out = convert_ph2(source, output_root=raw, num_processes=1)
    (out / "marker.txt").write_text("previous conversion")
    refused(convert_ph2, "already exists.*--overwrite", raw, source)
    assert (out / "marker.txt").exists()
    convert_ph2(source, output_root=raw, num_processes=1, overwrite=True)
    assert not (out / "marker.txt").exists()


def test_wrong_source_and_wrong_options(ph2, tmp_path):
    source, _, raw = ph2
    (tmp_path / "kvasir" / "images").mkdir(parents=True)
    (tmp_path / "kvasir" / "masks").mkdir()
    (tmp_path / "kvasir" / "images" / "cj1.jpg").write_bytes(b"")
    refused(convert_ph2, "does not hold the PH2 data", raw, tmp_path / "kvasir")
    refused(convert_ph2, "does not exist", raw, tmp_path / "missing")
    refused(convert_ph2, r"--splits only applies with --mode training", raw, source, splits=[tmp_path / "x.txt"])
    refused(convert_ph2, "--mode must be one of", raw, source, mode="test")
    shutil.rmtree(_case(source, "IMD002") / "IMD002_Dermoscopic_Image")
    refused(convert_ph2, r"have no image.*IMD002/IMD002_Dermoscopic_Image/IMD002\.bmp", raw, source)
