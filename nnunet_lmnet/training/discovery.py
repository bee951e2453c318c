"""``nnunet-lmnet trainer-path`` and ``nnunet-lmnet doctor``: how nnU-Net finds our trainers, and a check of it."""
from __future__ import annotations

import os

from nnunet_lmnet._autodiscovery import ENV_VAR, OPT_OUT_VAR, registered_folders, trainer_folder

EXPORT_LINE = f'export {ENV_VAR}="${{{ENV_VAR}:+${ENV_VAR}:}}$(nnunet-lmnet trainer-path)"'
TRAINERS = ("nnUNetTrainerLMNet", "nnUNetTrainerLGMSNet")
TESTED_NNUNET = ("2.8", "2.9")  # [min, max) of the nnunetv2 releases this plugin is tested with


def is_registered() -> bool:
    return os.path.normpath(trainer_folder()) in registered_folders()


def check() -> list[str]:
    """Problems found, each with the fix; empty when nnU-Net will find the trainers."""
    problems = []
    from importlib.metadata import version

    from packaging.version import Version

    v = Version(version("nnunetv2"))
    if not (Version(TESTED_NNUNET[0]) <= v < Version(TESTED_NNUNET[1])):
        problems.append(f"nnunetv2 {v} is outside the tested range >={TESTED_NNUNET[0]},<{TESTED_NNUNET[1]}: "
                        f"pip install 'nnunetv2>={TESTED_NNUNET[0]},<{TESTED_NNUNET[1]}'")
    if not is_registered():
        problems.append(f"{ENV_VAR} does not list the trainer folder (automatic registration "
                        f"{'is switched off by ' + OPT_OUT_VAR if os.environ.get(OPT_OUT_VAR) else 'did not run'}). "
                        f"Fix: {EXPORT_LINE}")
        return problems
    import contextlib
    import io

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    for name in TRAINERS:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints every folder it searches
                recursive_find_trainer_class_by_name(name)
        except Exception as e:  # noqa: BLE001 - whatever broke the lookup is the user's problem to see
            problems.append(f"nnU-Net cannot find {name} ({type(e).__name__}: {e}). Fix: {EXPORT_LINE}")
    return problems


def _trainer_path(args) -> int:
    print(trainer_folder())
    return 0


def _doctor(args) -> int:
    problems = check()
    for p in problems:
        print(f"PROBLEM: {p}")
    if not problems:
        print(f"OK: nnU-Net finds {', '.join(TRAINERS)} (folder {trainer_folder()} is in {ENV_VAR}).")
    return 1 if problems else 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "trainer-path",
        help=f"print the folder to put in {ENV_VAR} (the folder holding only the trainer module)",
        description=f"Print the absolute folder nnU-Net must scan for the trainers. Installing the package "
                    f"registers it automatically; where that is switched off or not picked up: {EXPORT_LINE}",
    )
    p.set_defaults(func=_trainer_path)
    d = subparsers.add_parser("doctor", help="check that nnU-Net finds the trainers and say how to fix it if not")
    d.set_defaults(func=_doctor)
