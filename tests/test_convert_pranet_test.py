"""PraNet TestDataset converter: one target dataset per subset (or a chosen one), nested unzip, grey and RGB PNG
masks, all-or-nothing, bad inputs, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convert_fixtures import load_png, raw_entries, tree_digest, verify_with_nnunet
from nnunet_lmnet.cli import main
from nnunet_lmnet.dataset_conversion.pranet_test import convert_pranet_test
from zero_shot_fixtures import make_pranet, refused

SUBSETS = {"CVC-300": ["149", "150", "151"], "Kvasir": ["cju0qkwl35piu0993l0dewei2", "cju0roawvklrq0799vmjorwfv"]}


@pytest.fixture
def pranet(tmp_path):
    truth = make_pranet(tmp_path / "download", SUBSETS, nested=True)
    return tmp_path / "download", truth, tmp_path / "raw"


def _subset(source, name):
    return source / "TestDataset" / "TestDataset" / name


def test_every_subset_becomes_a_target_dataset(pranet):
    source, truth, raw = pranet
    assert Image.open(_subset(source, "CVC-300") / "masks" / "150.png").mode == "RGB"
    assert Image.open(_subset(source, "CVC-300") / "masks" / "149.png").mode == "L"
    before = tree_digest(source)
    outs = convert_pranet_test(source, output_root=raw, num_processes=1, verify=True)

    assert [o.name for o in outs] == ["Dataset511_CVC300", "Dataset515_PraNetKvasir"]
    assert raw_entries(raw) == {o.name for o in outs} and tree_digest(source) == before
    cvc = outs[0]
    assert sorted(p.name for p in (cvc / "imagesTs").iterdir()) == [f"CVC300_{n}_0000.png" for n in SUBSETS["CVC-300"]]
    for (subset, stem), mask in truth.items():
        out, prefix = (outs[0], "CVC300") if subset == "CVC-300" else (outs[1], "Kvasir")
        image = load_png(out / "imagesTs" / f"{prefix}_{stem}_0000.png")
        assert np.array_equal(image, np.asarray(Image.open(_subset(source, subset) / "images" / f"{stem}.png")))
        assert np.array_equal(load_png(out / "labelsTs" / f"{prefix}_{stem}.png"), mask.astype(np.uint8))
    meta = json.loads((cvc / "dataset.json").read_text())
    assert meta["numTraining"] == 0 and meta["labels"] == {"background": 0, "polyp": 1}
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["pairs_with"] == "kvasir"
    assert not (cvc / "imagesTr").exists()


def test_chosen_subset_from_its_own_folder(pranet):
    source, _, raw = pranet
    [out] = convert_pranet_test(_subset(source, "CVC-300"), output_root=raw, num_processes=1, dataset_id=591,
                                name="EndoScene", mode="training")
    assert out.name == "Dataset591_EndoScene" and raw_entries(raw) == {out.name}
    assert len(list((out / "labelsTr").iterdir())) == 3
    verify_with_nnunet(out)
    [kvasir] = convert_pranet_test(source, output_root=raw, num_processes=1, subset=["kvasir"])
    assert kvasir.name == "Dataset515_PraNetKvasir"


def test_one_bad_subset_writes_nothing(pranet):
    source, _, raw = pranet
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(_subset(source, "Kvasir") / "masks" /
                                                      f"{SUBSETS['Kvasir'][1]}.png")
    refused(convert_pranet_test, rf"size mismatch.*{SUBSETS['Kvasir'][1]}\.png", raw, source)
    assert not raw_entries(raw)  # CVC-300 was fine but does not appear either


def test_missing_mask(pranet):
    source, _, raw = pranet
    (_subset(source, "CVC-300") / "masks" / "151.png").unlink()
    refused(convert_pranet_test, r"have no mask.*'151\.png'", raw, source)


def test_unknown_label_value(pranet):
    source, _, raw = pranet
    path = _subset(source, "CVC-300") / "masks" / "149.png"
    w, h = Image.open(path).size
    Image.fromarray((np.arange(w * h).reshape(h, w) % 3).astype(np.uint8)).save(path)
    refused(convert_pranet_test, r"unexpected label values in .*149\.png", raw, source)


def test_existing_target_needs_overwrite(pranet):
    source, _, raw = pranet
    convert_pranet_test(source, output_root=raw, num_processes=1, subset="Kvasir")
    refused(convert_pranet_test, r"Dataset515_PraNetKvasir already exists.*--overwrite", raw, source)
    assert raw_entries(raw) == {"Dataset515_PraNetKvasir"}  # CVC-300 is not written either


def test_wrong_source_and_options(pranet, tmp_path):
    source, _, raw = pranet
    (tmp_path / "other" / "images").mkdir(parents=True)
    (tmp_path / "other" / "images" / "a.png").write_bytes(b"")
    refused(convert_pranet_test, "does not hold PraNet's TestDataset", raw, tmp_path / "other")
    refused(convert_pranet_test, "unknown PraNet test subset 'CVC-612'", raw, source, subset="CVC-612")
    refused(convert_pranet_test, r"'ETIS-LaribPolypDB' not found", raw, source, subset="etis-laribpolypdb")
    refused(convert_pranet_test, "--dataset-id and --name name one dataset", raw, source, dataset_id=600)


def test_cli(pranet, monkeypatch, capsys):
    source, _, raw = pranet
    monkeypatch.setenv("nnUNet_raw", str(raw))
    raw.mkdir()
    assert main(["convert", "pranet-test", str(source), "--subset", "CVC-300", "--num-processes", "1"]) == 0
    assert "Dataset511_CVC300: 0 training case(s), 3 test image(s)" in capsys.readouterr().out
    assert main(["convert", "pranet-test", str(source), "--subset", "CVC-300"]) == 2
    assert "--overwrite" in capsys.readouterr().err
