import json
import signal
from pathlib import Path

import pytest
import torch

from nnunet_env import E2E_TRAINERS, nnunet_test_env


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (as the test trainers use): two threads collapse when another process holds a
    core, and tiny tensors gain nothing from more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ signal dispositions
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _signal_state() -> dict:
    """Python's handler of each stop signal, and whether the OS ignores or blocks it (this thread's mask). A test
    that leaves SIGINT ignored passes that on to every child process, and Ctrl-C then never reaches them."""
    masks = {}
    status = Path("/proc/self/status")
    if status.exists():  # Linux; elsewhere only Python's handlers are compared
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("SigIgn", "SigBlk"):
                masks[key] = int(value.strip(), 16)
    state = {}
    for sig in _STOP_SIGNALS:
        bit = 1 << (sig - 1)
        state[sig.name] = (signal.getsignal(sig), {k: bool(v & bit) for k, v in masks.items()})
    return state


@pytest.fixture(autouse=True)
def signals_unchanged():
    """Fail a test that changes how this process handles Ctrl-C, SIGTERM or SIGHUP and does not restore it."""
    before = _signal_state()
    yield
    after = _signal_state()
    changed = {name: (before[name], after[name]) for name in before if before[name] != after[name]}
    if changed:
        for sig in _STOP_SIGNALS:  # restore, so that one failure does not cascade into the following tests
            handler, os_state = before[sig.name]
            if handler is not None:
                signal.signal(sig, handler)
            if not os_state.get("SigBlk", False):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        pytest.fail(f"this test left signal handling changed (before, after): {changed}")


# ------------------------------------------------------------------------------------ shared end-to-end fixtures
SHARED_MODEL_FIXTURES = {"demo_2d", "preprocessed_3d", "trained_3d"}


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, the default addopts) every test that needs one of the trained
    tiny models below runs in one worker, so each model is made once; the other tests fill the other worker."""
    for item in items:
        if SHARED_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("nnunet_models"))


# Trained tiny models are made once per session and shared by every test file that needs one (training is the
# slow part of the suite). Tests may add folders (other trainers, predictions) but must not change what is there.

@pytest.fixture(scope="session")
def demo_2d(tmp_path_factory):
    """The 2D demo pipeline (dataset 980, 64x64, 3 labels) with the LM-Net test trainer, fold 0:
    (root, env, summary). root/predictions holds the demo's predictions of imagesTs."""
    from nnunet_lmnet.demo import run_demo

    root = tmp_path_factory.mktemp("demo_lmnet")
    env = nnunet_test_env(root)
    summary = run_demo(root, arch="lmnet", trainer=E2E_TRAINERS["lmnet"], num_train=10, num_test=2, overwrite=True,
                       extra_env=env)
    return root, env, summary


@pytest.fixture(scope="session")
def preprocessed_3d(tmp_path_factory):
    """Anisotropic 3D dataset 981 (6 training cases, 1 test case), planned and preprocessed for 3d_fullres."""
    from nnunet_lmnet.nnunet_commands import run
    from nnunet_lmnet.synthetic_dataset import write_synthetic_dataset

    root = tmp_path_factory.mktemp("e2e_3d")
    env = nnunet_test_env(root)
    write_synthetic_dataset(env["nnUNet_raw"], 981, dim=3, num_train=6, num_test=1)
    run("nnUNetv2_plan_and_preprocess", "-d", "981", "-c", "3d_fullres", "-np", "1", "-npfp", "1", env=env,
        quiet=True)
    return root, env


@pytest.fixture(scope="session")
def trained_3d(preprocessed_3d):
    """`trained_3d(arch)` -> model folder of fold 0 of dataset 981, 3d_fullres, trained once per session."""
    from nnunet_lmnet.nnunet_commands import run

    root, env = preprocessed_3d
    done: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in done:
            trainer = E2E_TRAINERS[arch]
            run("nnUNetv2_train", "981", "3d_fullres", "0", "-tr", trainer, "-device", "cpu",
                env={**env, "nnUNet_n_proc_DA": "0"}, quiet=True)
            done[arch] = next(Path(env["nnUNet_results"]).glob("Dataset981_*")) / f"{trainer}__nnUNetPlans__3d_fullres"
            assert json.loads((done[arch] / "plans.json").read_text())  # written by nnU-Net
        return done[arch]

    return get
