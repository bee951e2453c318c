"""Run the stock ``nnUNetv2_*`` console commands as subprocesses, with their output streamed through."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import UserError


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
    env.update(extra)
    return env


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
    cmd = [command_path(name), *map(str, args)]
    print(f"\n$ {' '.join([name, *map(str, args)])}", flush=True)
    result = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None)
    if result.returncode != 0:
        raise UserError(f"{name} failed with exit code {result.returncode} (its output is above)")
