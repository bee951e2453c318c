"""Generate the seeded float64 reference outputs of LM-Net and LGMSNet: ``tests/reference/<case>.pt``.

What: one file (``torch.save``) per case of ``tests/reference_procedure.CASES`` (LM-Net and LGMSNet, each 2D,
isotropic 3D and anisotropic 3D, tiny widths), holding
- ``kwargs`` (the constructor kwargs) and ``reference_parameters`` (the reference constructor's parameter names:
  the test also runs every boolean kwarg added since with both values);
- the network's state_dict: random weights, norm parameters and running statistics, exactly representable in
  float16 and stored so (``layout`` + ``state_float16`` / ``state_int64``; the test loads them into a float64
  network, which is exact);
- ``input`` (float64) and what ``reference_procedure.run`` gives in float64: the eval output (deep supervision
  off; LM-Net fuses its multi-branch blocks), the train outputs (deep supervision on, ``torch.manual_seed`` right
  before the forward, so dropout masks are fixed), the gradients of the input and of every parameter for a fixed
  loss (small ones whole, larger ones as norm + fixed weighted sum + 4 entries) and every buffer (BatchNorm
  running statistics) after the train forward, which the backward must leave unchanged.
The flat packing (see ``reference_procedure``) keeps the files at 135-200 KB, ~1 MB together.

From which code: a frozen copy of ``nnunet_lmnet/architectures`` imported as the package ``refarch``, never the
working tree: by default the directory as of commit REF_COMMIT (b3e987b, before the activation recomputation
and speed changes), whose networks compute the official networks' function.

Regenerate (only when the function is *meant* to change; review why the old references failed first):
    . .venv/bin/activate
    python tests/reference/make_reference.py                        # the architectures of REF_COMMIT (git archive)
    python tests/reference/make_reference.py --ref-dir /tmp/refpkg  # a directory holding refarch/
    python tests/reference/make_reference.py --commit <sha>         # another commit's architectures
A few seconds on CPU. Then run ``pytest tests/test_reference_outputs.py``.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import math
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REF_COMMIT = "b3e987bec228841acba2aba1eceafbd01715af68"
sys.path.insert(0, str(HERE.parent))  # tests/: reference_procedure

import reference_procedure as rp  # noqa: E402

CLASS_NAMES = {"lmnet": ("lmnet", "LMNet"), "lgmsnet": ("lgmsnet", "LGMSNet")}


def extract_architectures(commit: str, dest: Path) -> None:
    """git archive the commit's nnunet_lmnet/architectures into dest/refarch (it only uses relative imports)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", commit, "nnunet_lmnet/architectures"],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (dest / "nnunet_lmnet" / "architectures").rename(dest / "refarch")


def randomized_state(net: torch.nn.Module, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random state_dict for `net`, every float entry exactly representable in float16.

    Weights: fan-in scaled normal (activations stay O(1), attention logits far from uniform); norm affine
    parameters around 1 / 0. BatchNorm running statistics: the batch statistics of one train forward on `x`
    (so eval activations keep a sane scale and float64 rounding stays ~1e-14 relative), then perturbed so that
    eval (BN folding, LM-Net's fused kernels) really differs from train. num_batches_tracked starts at 3, so the
    increment shows. Values are rounded to float16 (11-bit mantissa, still irregular) so the files store the state
    at a quarter of the float64 size; float16 -> float64 is exact and the networks compute in float64.
    """
    def randn(shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    nn = torch.nn
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    norm_modules = {name for name, m in net.named_modules() if isinstance(m, norm_types)}
    state = {}
    for name, t in net.state_dict().items():
        module, _, leaf = name.rpartition(".")
        if not t.is_floating_point() or leaf in ("running_mean", "running_var"):
            state[name] = t  # set below
        elif module in norm_modules:
            state[name] = (1.0 + 0.25 * randn(t.shape)) if leaf == "weight" else 0.25 * randn(t.shape)
        elif t.ndim >= 2 and leaf == "weight":
            state[name] = randn(t.shape) / math.sqrt(math.prod(t.shape[1:]))
        elif leaf == "rpb":
            state[name] = 0.5 * randn(t.shape)
        else:
            state[name] = 0.2 * randn(t.shape)
    state = {k: (v.half().double() if v.is_floating_point() else v) for k, v in state.items()}
    net.load_state_dict(state)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0  # running statistics := this batch's
    net.train()
    torch.manual_seed(0)
    with torch.no_grad():
        net(x)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
        m.running_mean.add_(0.2 * m.running_var.sqrt() * randn(m.running_mean.shape))
        m.running_var.mul_(torch.exp(0.3 * randn(m.running_var.shape)))
        m.num_batches_tracked.fill_(3)
    return {k: (v.half().double() if v.is_floating_point() else v.clone()) for k, v in net.state_dict().items()}


def make_case(name: str, case: dict, classes: dict, seed: int, source: str) -> dict:
    module_name, class_name = CLASS_NAMES[case["network"]]
    cls = getattr(classes[module_name], class_name)
    gen = torch.Generator().manual_seed(seed)
    net = cls(**case["kwargs"]).double()
    x = torch.randn(case["input_shape"], generator=gen, dtype=torch.float64)
    state = randomized_state(net, x, gen)
    net.load_state_dict(state)
    parameter_names = {n for n, _ in net.named_parameters()}
    result = rp.run(net, x)
    return {
        "format_version": rp.FORMAT_VERSION,
        "case": name,
        "network": case["network"],
        "kwargs": case["kwargs"],
        "reference_parameters": sorted(inspect.signature(cls).parameters),
        "reference_source": source,
        "torch_version": str(torch.__version__),
        "input": x,
        **rp.pack(state, parameter_names, result),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref-dir", type=Path, help="directory containing the frozen package refarch/")
    parser.add_argument("--commit", default=REF_COMMIT, help="commit whose architectures to use (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.ref_dir
        if root is None:
            root = Path(tmp)
            extract_architectures(args.commit, root)
        sys.path.insert(0, str(root))
        classes = {m: importlib.import_module(f"refarch.{m}") for m, _ in CLASS_NAMES.values()}
        source = Path(classes["lmnet"].__file__).parent
        if REPO / "nnunet_lmnet" in source.parents:
            raise SystemExit(f"refusing to use the working tree's networks ({source})")
        source_label = f"commit {args.commit}" if args.ref_dir is None else str(source)
        print(f"reference networks from {source} ({source_label})")
        torch.set_num_threads(1)  # one reduction order
        for k, (name, case) in enumerate(rp.CASES.items()):
            record = make_case(name, case, classes, seed=1000 + k, source=source_label)
            path = args.out / f"{name}.pt"
            torch.save(record, path)
            print(f"{path.name}: {path.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
