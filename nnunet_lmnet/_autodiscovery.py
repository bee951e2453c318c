"""Register the trainer folder with nnU-Net at interpreter start (imported by a .pth file).

nnU-Net >= 2.8 looks for trainers outside its own tree only in the folders listed in ``nnUNet_extTrainer``.
Appending ours (never replacing the user's) makes ``-tr nnUNetTrainerLMNet`` work right after ``pip install``.
Must stay cheap and must never raise: it runs in every Python process of the environment.
"""
import os

ENV_VAR = "nnUNet_extTrainer"
OPT_OUT_VAR = "NNUNET_LMNET_NO_AUTODISCOVERY"


def trainer_folder() -> str:
    """The folder that holds only the trainer module nnU-Net should import."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "training", "ext")


def registered_folders(value: str | None = None) -> list[str]:
    value = os.environ.get(ENV_VAR, "") if value is None else value
    return [os.path.normpath(p) for p in value.split(os.pathsep) if p]


def register() -> None:
    if os.environ.get(OPT_OUT_VAR, "").lower() in ("1", "true", "yes"):
        return
    folder = trainer_folder()
    if os.path.normpath(folder) in registered_folders():
        return
    current = os.environ.get(ENV_VAR, "")
    os.environ[ENV_VAR] = current + os.pathsep + folder if current else folder


try:
    register()
except Exception:  # pragma: no cover - never break interpreter start-up
    pass
