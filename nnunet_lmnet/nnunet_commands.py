"""Run the stock ``nnUNetv2_*`` console commands as subprocesses, with their output streamed through."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .errors import UserError
from .signals import deferred_signals, exit_on_signals, raise_for


def nnunet_environment(root: Path, **extra: str) -> dict[str, str]:
    """The current environment with nnU-Net's folders under `root` and CPU-friendly defaults."""
    env = dict(os.environ)
    env.update(
        nnUNet_raw=str(root / "nnUNet_raw"),
        nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
        nnUNet_results=str(root / "nnUNet_results"),
    )
    env.setdefault("nnUNet_def_n_proc", "1")  # default is 8 spawn workers, slow on small machines
    env.setdefault("nnUNet_compile", "0")
    env.update(cpu_sharing_environment(env))
    env.update(extra)
    return env


# Spin iterations before a waiting OpenMP thread sleeps (GNU OpenMP, which PyTorch's x86 wheels use). Measured on 2
# vCPUs, LM-Net training step, 2 threads: idle 1.00 / 1.20 / 1.77 and with one spinning process 8.4 / 2.5 / 2.0
# for libgomp's default (300,000) / 3,000 / 0 (OMP_WAIT_POLICY=PASSIVE).
SPIN_COUNT = "3000"


def cpu_sharing_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """A short OpenMP spin (``GOMP_SPINCOUNT``) unless `env` (default: this process's environment) sets the wait
    policy or the spin count.

    torch's OpenMP threads spin while they wait for each other; when another process holds a core, a thread waits
    for a descheduled peer at every parallel region and CPU training runs many times slower. Passive waiting
    (no spin) fixes that but costs ~1.8x on an idle machine; a short spin keeps most of both. The runtime reads
    the variables once, when torch is first imported, so they only reach processes started with them: the
    nnUNetv2_* subprocesses. (The demo's own process never runs torch.)
    """
    env = os.environ if env is None else env
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return {}
    return {"GOMP_SPINCOUNT": SPIN_COUNT}


def command_path(name: str) -> str:
    """The console script `name`, preferring the one next to this interpreter (the same environment)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UserError(f"{name} not found: install nnunetv2 in this environment (pip install nnunet-lmnet)")
    return found


def run(name: str, *args: str, env: dict[str, str], quiet: bool = False) -> None:
    """Run an nnU-Net command and wait; Ctrl-C, a kill or a hang-up here stops it (and its workers) quietly.

    The command runs in a session of its own, so a Ctrl-C at the terminal reaches only this process, which ends
    the command's process group with SIGTERM instead of every nnU-Net process printing a traceback.
    """
    cmd = [command_path(name), *map(str, args)]
    print(f"\n$ {' '.join([name, *map(str, args)])}", flush=True)
    process = None
    try:
        with exit_on_signals():
            # a signal while Popen runs is acted on once `process` exists, so the command is always stopped
            with deferred_signals() as received:
                process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None,
                                           start_new_session=True)
            if received:
                raise_for(received[0])
            returncode = process.wait()
    except BaseException:
        if process is not None:
            _stop(process)
        raise
    if returncode != 0:
        raise UserError(f"{name} failed with exit code {returncode} (its output is above)")


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the command's process group, SIGKILL if it is still there after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            process.wait()
            return
        try:
            process.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
