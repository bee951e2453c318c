"""`nnunet-lmnet model-card` on a fabricated, buildable model folder."""
from __future__ import annotations

import json
from importlib.metadata import version

import numpy as np
import pytest

from nnunet_lmnet.cli import main
from test_compare_support import DATASET, setup_env, write_real_model, write_summary

nan = float("nan")
DICE = {0: {"c0": {1: 0.90, 2: 0.60}, "c1": {1: 0.80, 2: nan}},
        1: {"c2": {1: 0.70, 2: 0.50}, "c3": {1: 0.75, 2: 0.40}}}


@pytest.fixture
def model(tmp_path, monkeypatch):
    roots = setup_env(monkeypatch, tmp_path)
    folder = roots["nnUNet_results"] / DATASET / "nnUNetTrainer__nnUNetPlans__2d"
    net = write_real_model(folder, folds=(0, 1))
    for k, cases in DICE.items():
        write_summary(folder / f"fold_{k}" / "validation" / "summary.json", cases)
    (folder / "fold_0" / "debug.json").write_text(json.dumps({"num_epochs": "1000", "torch_version": "2.9.0",
                                                              "hostname": "secret-box", "gpu_name": "H100"}))
    splits = [{"train": ["c2", "c3", "c4"], "val": ["c0", "c1"]}, {"train": ["c0", "c1", "c4"], "val": ["c2", "c3"]}]
    pre = roots["nnUNet_preprocessed"] / DATASET
    pre.mkdir(parents=True)
    (pre / "splits_final.json").write_text(json.dumps(splits))
    return folder, net


def test_model_card_contents(model, capsys):
    folder, net = model
    assert main(["model-card", str(folder), "--flops"]) == 0
    card = (folder / "MODEL_CARD.md").read_text()
    assert card in capsys.readouterr().out
    assert card.startswith(f"# Model card: `nnUNetTrainer` on {DATASET} (2d)")
    n_params = sum(p.numel() for p in net.parameters())
    # weights shared by encoder and decoder are counted once
    assert f"| Parameters | {n_params:,} (`fold_0/checkpoint_final.pth`" in card
    assert "| Patch size | 32 × 32 |" in card and "| Batch size | 4 |" in card
    assert "| Target spacing | 1 × 1 |" in card and "| Strides per stage | [[1, 1], [2, 2]] |" in card
    assert "dynamic_network_architectures.architectures.unet.PlainConvUNet" in card
    assert '  "features_per_stage": [4, 8],' in card and '  "strides": [[1, 1], [2, 2]]' in card
    assert "MACs =" in card and "FLOPs for input 1 × 1 × 32 × 32" in card
    assert "| Labels | background = 0, liver = 1, tumor = 2 |" in card
    # splits
    assert "2 folds over 5 cases" in card and "| 0 | 3 | 2 |" in card
    # CV results: fold 0 tumor is nanmean over one case; mean row over the two folds
    assert "| 0 | 0.8500 | 0.6000 | 0.7250 |" in card
    assert "| 1 | 0.7250 | 0.4500 | 0.5875 |" in card
    exp = f"{np.mean([0.85, 0.725]):.4f} ± {np.std([0.85, 0.725], ddof=1):.4f}"
    assert f"| **mean ± std** | {exp} |" in card
    assert "Finished folds: 0, 1; missing: 2, 3, 4." in card
    # versions and training environment
    assert f"| nnunetv2 | {version('nnunetv2')} |" in card and f"| torch | {version('torch')} |" in card
    assert "| torch_version | 2.9.0 |" in card and "| num_epochs | 1000 |" in card
    assert "secret-box" not in card  # no host names in a card meant to be shared
    assert "| Test-time mirroring axes | (0, 1) |" in card


def test_model_card_output_rules(model, tmp_path, capsys):
    folder, _ = model
    assert main(["model-card", str(folder)]) == 0
    first = (folder / "MODEL_CARD.md").read_text()
    assert "| MACs / FLOPs | not computed |" in first
    assert main(["model-card", str(folder)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (folder / "MODEL_CARD.md").read_text() == first
    assert main(["model-card", str(folder), "--overwrite", "-f", "0"]) == 0
    assert "missing: none" in (folder / "MODEL_CARD.md").read_text()
    other = tmp_path / "cards" / "card.md"
    assert main(["model-card", str(folder), "--out", str(other)]) == 0 and other.is_file()


def test_model_card_errors(model, tmp_path, capsys):
    folder, _ = model
    assert main(["model-card", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    odd = tmp_path / "not_a_model"
    odd.mkdir()
    assert main(["model-card", str(odd)]) == 2
    assert "<trainer>__<plans>__<configuration>" in capsys.readouterr().err
    (folder / "plans.json").unlink()
    assert main(["model-card", str(folder)]) == 2
    assert "plans.json not found" in capsys.readouterr().err


def test_a_checkpoint_of_another_trainer_is_named_as_the_one_nnunet_uses(tmp_path, monkeypatch):
    """The folder says nnUNetTrainer, the checkpoint another trainer: nnU-Net's predictor builds the checkpoint's."""
    import torch

    roots = setup_env(monkeypatch, tmp_path)
    folder = roots["nnUNet_results"] / DATASET / "nnUNetTrainer__nnUNetPlans__2d"
    write_real_model(folder, folds=(0,), trainer="nnUNetTrainerNoMirroring")
    assert main(["model-card", str(folder)]) == 0
    card = (folder / "MODEL_CARD.md").read_text()
    assert ("| Trainer | `nnUNetTrainerNoMirroring` (from `fold_0/checkpoint_final.pth`: nnU-Net's predictor builds "
            "the network with this class); the folder is named for `nnUNetTrainer` |") in card
    assert ("**Trainer mismatch.** The folder is named for `nnUNetTrainer`, but its checkpoint was written by "
            "`nnUNetTrainerNoMirroring`.") in card
    assert "takes the trainer class from the checkpoint's `trainer_name`" in card
    assert "Configuration in checkpoint" not in card

    ckpt_path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["trainer_name"], ckpt["init_args"]["configuration"] = "nnUNetTrainer", "2d_other"
    torch.save(ckpt, ckpt_path)
    assert main(["model-card", str(folder), "--overwrite"]) == 0
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| Trainer | `nnUNetTrainer` |" in card and "mismatch" not in card
    assert "| Configuration in checkpoint | `2d_other`: nnU-Net's predictor uses it, not the folder's `2d` |" in card
