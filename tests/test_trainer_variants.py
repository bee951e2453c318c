"""Benchmark and paper-recipe trainer variants: discovery, class layout, optimisers, lr curves, a real CPU benchmark."""
import contextlib
import io
import json
import random
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.benchmarking.nnUNetTrainerBenchmark_5epochs import (
    nnUNetTrainerBenchmark_5epochs,
)
from nnunetv2.training.nnUNetTrainer.variants.benchmarking.nnUNetTrainerBenchmark_5epochs_noDataLoading import (
    nnUNetTrainerBenchmark_5epochs_noDataLoading,
)

from nnunet_env import nnunet_test_env
from nnunet_lmnet._autodiscovery import trainer_folder
from nnunet_lmnet.architectures.lgmsnet import LGMSNet
from nnunet_lmnet.architectures.lmnet import LMNet
from nnunet_lmnet.nnunet_commands import run
from nnunet_lmnet.synthetic_dataset import write_synthetic_dataset
from nnunet_lmnet.training import benchmark_trainers as bt
from nnunet_lmnet.training import recipe_trainers as rt
from nnunet_lmnet.training.recipe_trainers import WarmupCosineLRScheduler
from nnunet_lmnet.training.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLMNet
from synthetic_plans import ISO_2D_7, default_configuration, plans_with

# name -> (stock parent, our trainer or None, our network or None)
VARIANTS = {
    "nnUNetTrainerLMNetBenchmark_5epochs": (nnUNetTrainerBenchmark_5epochs, nnUNetTrainerLMNet, LMNet),
    "nnUNetTrainerLMNetBenchmark_5epochs_noDataLoading": (nnUNetTrainerBenchmark_5epochs_noDataLoading,
                                                          nnUNetTrainerLMNet, LMNet),
    "nnUNetTrainerLGMSNetBenchmark_5epochs": (nnUNetTrainerBenchmark_5epochs, nnUNetTrainerLGMSNet, LGMSNet),
    "nnUNetTrainerLGMSNetBenchmark_5epochs_noDataLoading": (nnUNetTrainerBenchmark_5epochs_noDataLoading,
                                                            nnUNetTrainerLGMSNet, LGMSNet),
    "nnUNetTrainerBenchmarkAnyDevice_5epochs": (nnUNetTrainerBenchmark_5epochs, None, None),
    "nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs": (bt.nnUNetTrainerBenchmarkAnyDevice_5epochs, nnUNetTrainerLMNet,
                                                     LMNet),
    "nnUNetTrainerLGMSNetBenchmarkAnyDevice_5epochs": (bt.nnUNetTrainerBenchmarkAnyDevice_5epochs,
                                                       nnUNetTrainerLGMSNet, LGMSNet),
    "nnUNetTrainerLMNet_AdamWCosine": (nnUNetTrainer, nnUNetTrainerLMNet, LMNet),
    "nnUNetTrainerLGMSNet_SGD002": (nnUNetTrainer, nnUNetTrainerLGMSNet, LGMSNet),
    "nnUNetTrainerLGMSNet_AdamWWarmupCosine": (nnUNetTrainer, nnUNetTrainerLGMSNet, LGMSNet),
}
CUDA_ONLY = [n for n in VARIANTS if "Benchmark_5epochs" in n]  # combined with the stock classes that assert CUDA
RECIPES = ["nnUNetTrainerLMNet_AdamWCosine", "nnUNetTrainerLGMSNet_SGD002", "nnUNetTrainerLGMSNet_AdamWWarmupCosine"]
DATASET_JSON = {"channel_names": {"0": "grey"}, "labels": {"background": 0, "disc": 1, "square": 2},
                "numTraining": 6, "file_ending": ".png"}


def _cls(name):
    return getattr(bt, name, None) or getattr(rt, name)


def _plans():
    strides, kernels = ISO_2D_7
    return {**plans_with({"2d": default_configuration(strides, kernels, (64, 64))}), "continue_training": False}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def results_env(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)


def _trainer(name, cuda_available=False):
    """A trainer on CPU for the synthetic 2D plans, with its network and optimiser built as initialize() does."""
    with contextlib.ExitStack() as stack, contextlib.redirect_stdout(io.StringIO()):
        if cuda_available:  # the stock benchmark classes assert CUDA in __init__; nothing else there needs it
            stack.enter_context(mock.patch.object(torch.cuda, "is_available", return_value=True))
        trainer = _cls(name)(_plans(), "2d", 0, DATASET_JSON, torch.device("cpu"))
    trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1,
                                                         trainer.label_manager.num_segmentation_heads, True)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    return trainer


@pytest.mark.parametrize("name", VARIANTS)
def test_nnunet_finds_every_variant_through_the_ext_folder(name, monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    assert "__" not in name
    monkeypatch.setenv("nnUNet_extTrainer", trainer_folder())
    with contextlib.redirect_stdout(io.StringIO()):
        found = recursive_find_trainer_class_by_name(name)
    assert found is _cls(name)  # the package's class, not a copy imported from the ext folder


@pytest.mark.parametrize("name", VARIANTS)
def test_class_layout(name):
    cls = _cls(name)
    stock, ours, network = VARIANTS[name]
    assert issubclass(cls, stock)
    if ours is not None:
        assert issubclass(cls, ours)
        assert cls.build_network_architecture is ours.build_network_architecture
        mro = cls.__mro__  # our plans rewrite runs before the stock benchmark __init__
        assert mro.index(ours) < mro.index(stock)
    if issubclass(stock, nnUNetTrainerBenchmark_5epochs):  # the benchmark behaviour is the stock one, unchanged
        for attr in ("run_training", "on_train_end", "perform_actual_validation", "save_checkpoint", "get_dataloaders"):
            if attr not in vars(cls):  # only the AnyDevice base defines one (on_train_end, tested by the CPU run)
                assert getattr(cls, attr) is getattr(stock, attr)


@pytest.mark.parametrize("name", [n for n in VARIANTS if n not in CUDA_ONLY])
def test_builds_our_network_and_records_init_args(name, results_env):
    trainer = _trainer(name)
    network = VARIANTS[name][2]
    if network is not None:
        assert isinstance(trainer.network, network)
        assert trainer.configuration_manager.network_arch_class_name.endswith(network.__name__)
    assert list(trainer.my_init_kwargs) == ["plans", "configuration", "fold", "dataset_json", "device"]


@pytest.mark.parametrize("name", CUDA_ONLY)
def test_stock_benchmark_combinations_construct(name, results_env):
    """The CUDA-only classes, constructed on CPU with the assert satisfied: our plans, network and their settings."""
    trainer = _trainer(name, cuda_available=True)
    network = VARIANTS[name][2]
    assert isinstance(trainer.network, network)
    assert trainer.configuration_manager.network_arch_class_name.endswith(network.__name__)
    assert trainer.num_epochs == 5 and trainer.disable_checkpointing
    assert list(trainer.my_init_kwargs) == ["plans", "configuration", "fold", "dataset_json", "device"]


def test_any_device_lifts_only_the_cuda_assert(results_env):
    trainer = _trainer("nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs")
    assert trainer.num_epochs == 5 and trainer.disable_checkpointing and not trainer.crashed_with_runtime_error
    with pytest.raises(AssertionError), contextlib.redirect_stdout(io.StringIO()):
        _cls("nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs")(_plans(), "2d", 1, DATASET_JSON, torch.device("cpu"))


@pytest.mark.parametrize("name", ["nnUNetTrainerLMNetBenchmark_5epochs_noDataLoading",
                                  "nnUNetTrainerLGMSNetBenchmark_5epochs_noDataLoading"])
def test_no_data_loading_targets_match_our_deep_supervision(name, results_env):
    trainer = _trainer(name, cuda_available=True)
    targets = trainer.dummy_batch["target"]
    with torch.no_grad():
        outputs = trainer.network(trainer.dummy_batch["data"])
    assert len(outputs) == len(targets) == len(trainer._get_deep_supervision_scales())
    assert [o.shape[2:] for o in outputs] == [t.shape[2:] for t in targets]
    trainer.loss = trainer._build_loss()
    assert np.isfinite(trainer.train_step(trainer.dummy_batch)["loss"])


def _lrs(scheduler, epochs):
    out = []
    for e in epochs:
        scheduler.step(e)
        out.append(scheduler.optimizer.param_groups[0]["lr"])
    return np.array(out)


def test_lmnet_adamw_cosine(results_env):
    trainer = _trainer("nnUNetTrainerLMNet_AdamWCosine")
    opt, sched = trainer.optimizer, trainer.lr_scheduler
    assert type(opt) is torch.optim.AdamW and type(sched) is WarmupCosineLRScheduler
    assert opt.defaults["lr"] == trainer.initial_lr == 1e-3 and opt.defaults["weight_decay"] == trainer.weight_decay
    assert trainer.weight_decay == 1e-4
    lrs = _lrs(sched, range(trainer.num_epochs))
    assert lrs[0] == 1e-3 and lrs[-1] < 1e-8 and np.all(np.diff(lrs) < 0)
    # the same curve as torch's CosineAnnealingLR stepped in order
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.AdamW([torch.zeros(1)], lr=1e-3),
                                                           T_max=trainer.num_epochs)
    ref = [reference.get_last_lr()[0]]
    for _ in range(trainer.num_epochs - 1):
        reference.optimizer.step()
        reference.step()
        ref.append(reference.get_last_lr()[0])
    np.testing.assert_allclose(lrs, ref, rtol=1e-6, atol=1e-12)


def test_lgmsnet_sgd_poly(results_env):
    trainer = _trainer("nnUNetTrainerLGMSNet_SGD002")
    opt, sched = trainer.optimizer, trainer.lr_scheduler
    assert type(opt) is torch.optim.SGD and type(sched) is PolyLRScheduler
    assert opt.defaults["lr"] == trainer.initial_lr == 0.02 and opt.defaults["weight_decay"] == 1e-4
    assert opt.defaults["momentum"] == 0.9 and not opt.defaults["nesterov"]
    epochs = np.arange(trainer.num_epochs)
    np.testing.assert_allclose(_lrs(sched, epochs), 0.02 * (1 - epochs / trainer.num_epochs) ** 0.9)


def test_lgmsnet_adamw_warmup_cosine(results_env):
    trainer = _trainer("nnUNetTrainerLGMSNet_AdamWWarmupCosine")
    opt, sched = trainer.optimizer, trainer.lr_scheduler
    assert type(opt) is torch.optim.AdamW and type(sched) is WarmupCosineLRScheduler
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 1e-5
    assert sched.warmup_steps == 10  # 1% of 1000 epochs, as 50 of 5000 in the official run
    lrs = _lrs(sched, range(trainer.num_epochs))
    warm, cos = lrs[:10], lrs[10:]
    assert warm[0] == 0 and np.all(np.diff(warm) > 0) and warm[-1] == pytest.approx(1e-3)
    assert cos[0] == pytest.approx(1e-3) and np.all(np.diff(cos) < 0) and cos[-1] < 1e-8
    np.testing.assert_allclose(warm, 1e-3 * np.arange(10) / 9)


def test_warmup_follows_num_epochs(results_env):
    trainer = _trainer("nnUNetTrainerLGMSNet_AdamWWarmupCosine")
    trainer.num_epochs = 500
    assert trainer.configure_optimizers()[1].warmup_steps == 5
    trainer.num_epochs = 50  # 0.5 epochs rounds to none
    _, sched = trainer.configure_optimizers()
    assert sched.warmup_steps == 0 and _lrs(sched, [0])[0] == 1e-3


@pytest.mark.parametrize("name", RECIPES)
def test_lr_of_an_epoch_does_not_depend_on_history(name, results_env):
    """nnU-Net resumes (--c) with a fresh scheduler and calls step(current_epoch): same lr as an unbroken run."""
    trainer = _trainer(name)
    n = trainer.num_epochs
    in_order = _lrs(trainer.lr_scheduler, range(n))
    shuffled = list(range(n))
    random.Random(0).shuffle(shuffled)
    _, fresh = trainer.configure_optimizers()
    np.testing.assert_array_equal(_lrs(fresh, shuffled), in_order[shuffled])
    for resume_at in (1, 10, 437, n - 1):
        _, resumed = trainer.configure_optimizers()
        assert _lrs(resumed, [resume_at])[0] == in_order[resume_at]


def test_warmup_cosine_plain_stepping_and_arguments():
    opt = torch.optim.AdamW([torch.zeros(1)], lr=1.0)
    sched = WarmupCosineLRScheduler(opt, 1.0, 20, warmup_steps=4)
    assert opt.param_groups[0]["lr"] == 0  # the base class's initial step is step 0
    plain = []
    for _ in range(19):
        opt.step()
        sched.step()
        plain.append(sched.get_last_lr()[0])
    assert plain == [sched.lr_at(e) for e in range(1, 20)]
    with pytest.raises(ValueError):
        WarmupCosineLRScheduler(opt, 1.0, 20, warmup_steps=20)


@pytest.fixture(scope="module")
def preprocessed_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark_2d")
    env = nnunet_test_env(root)
    write_synthetic_dataset(env["nnUNet_raw"], 982, dim=2, num_train=6, num_test=0)
    run("nnUNetv2_plan_and_preprocess", "-d", "982", "-c", "2d", "-np", "1", "-npfp", "1", env=env, quiet=True)
    return env


@pytest.mark.e2e
@pytest.mark.parametrize("trainer", ["nnUNetTrainerLMNetBenchmarkAnyDevice_5epochs_test",
                                     "nnUNetTrainerBenchmarkAnyDevice_5epochs_test"])
def test_any_device_benchmark_writes_the_result_on_cpu(preprocessed_2d, trainer, monkeypatch):
    """In-process nnUNetv2_train of the 2-epoch, 2-iteration test subclasses (tests/ext_trainers), with data loading."""
    from nnunetv2.run.run_training import run_training

    for key, value in preprocessed_2d.items():
        if key.startswith("nnUNet_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    with contextlib.redirect_stdout(io.StringIO()):
        run_training("982", "2d", 0, trainer, device=torch.device("cpu"))
    fold = next(Path(preprocessed_2d["nnUNet_results"]).glob("Dataset982_*")) / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    (key, record), = json.loads((fold / "benchmark_result.json").read_text()).items()
    assert isinstance(record["fastest_epoch"], float) and 0 < record["fastest_epoch"] < 60
    assert record["gpu_name"] == "cpu" and "__cpu__num_gpus_1" in key and record["torch_version"] == torch.__version__
    assert not list(fold.glob("checkpoint_*.pth"))  # the stock benchmark behaviour: no checkpoints, no validation
    assert not (fold / "validation").exists()
