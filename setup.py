"""Build hook: ship a one-line .pth so nnU-Net finds the trainers without any user set-up.

Everything else lives in pyproject.toml. The .pth imports ``nnunet_lmnet._autodiscovery``, which appends the
trainer folder to ``nnUNet_extTrainer`` (keeping the user's own entries). Set ``NNUNET_LMNET_NO_AUTODISCOVERY=1``
to opt out.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "nnunet_lmnet_autodiscovery.pth"
PTH_LINE = "import nnunet_lmnet._autodiscovery\n"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        # A .pth must sit at the root of site-packages, i.e. at the root of the wheel.
        if not getattr(self, "editable_mode", False):
            with open(os.path.join(self.build_lib, PTH_NAME), "w") as f:
                f.write(PTH_LINE)

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


setup(cmdclass={"build_py": BuildPyWithPth})
