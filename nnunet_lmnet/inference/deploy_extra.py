"""The optional ``deploy`` extra (onnx, onnxruntime, onnxscript): imported on demand, with an error that names it."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UserError

DEPLOY_INSTALL = "pip install 'nnunet-lmnet[deploy]'"
DEPLOY_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def require_deploy(what: str, packages: tuple[str, ...] = DEPLOY_PACKAGES) -> dict[str, ModuleType]:
    """Import `packages` ({name: module}); UserError naming the extra if one is missing or broken."""
    modules = {}
    for name in packages:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as e:  # also sys.modules[name] = None, and a broken install (missing shared library)
            raise UserError(f"{what} needs {name}, which cannot be imported ({e}). Install the deploy extra: "
                            f"{DEPLOY_INSTALL}") from None
    return modules
