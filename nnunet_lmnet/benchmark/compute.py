"""Compute benchmark: nnU-Net's default network and ours, built from the same plans configuration.

Per network: parameters, MACs/FLOPs at the planned patch, training-step time, inference time per patch and peak
memory. Each network is measured in a fresh child process (multiprocessing "spawn"), so peak memory and allocator
state do not carry over from the previous network. Python callers of ``run_benchmark`` need the usual
``if __name__ == "__main__":`` guard in scripts, as for any spawn pool.

- Networks: "default" = ``get_network_from_plans`` on the configuration, as ``nnUNetTrainer`` builds it; "lmnet" /
  "lgmsnet" = ``training.network_builder.build_network`` on the configuration our trainers see (architecture block
  derived from the plans, so deep-supervision scales follow the network's own strides).
- Training step: batch of the plans, random data and label maps (one per deep-supervision output), nnU-Net's loss
  (Dice + CE, or Dice + BCE for regions, in DeepSupervisionWrapper with weights 1/2^i, last 0, normalised),
  SGD lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5, gradient clipping at 12; forward + backward + step.
  On CUDA under fp16 autocast with a GradScaler, as nnU-Net trains.
- Inference: batch 1 at the patch, ``eval()``, deep supervision off, ``torch.inference_mode()`` (fp16 autocast on
  CUDA), i.e. one sliding-window tile without mirroring. LM-Net's multi-branch blocks run fused in eval.
- Times are medians of ``repeats`` runs after ``warmup`` runs, CUDA synchronised around each run.
- Memory: CUDA ``max_memory_allocated``; CPU peak resident set size of the child process (Linux VmHWM); each reset
  before its phase (inference first, then training) and reported with the amount just before the first forward.
- Saved activations: bytes autograd keeps for backward after one training forward, per sample (batch 1 at the
  patch, deep supervision on, ``saved_activations``: each storage once, parameters excluded, recomputed blocks
  counted by the inputs they keep). Device-independent: the activation memory a training step needs beside the
  weights, the figure nnU-Net's batch/patch budget is about. Counted after the timed phases.
- MACs: ``complexity.count_macs``, see ``MACS_NOTE``; counted after the timed phases, so they do not raise the
  memory peaks.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import time
from pathlib import Path

from ..errors import UserError

ARCHS = ("default", "lmnet", "lgmsnet")
DISPLAY = {"default": "nnU-Net default", "lmnet": "LM-Net", "lgmsnet": "LGMSNet"}
RATIO_KEYS = ("params", "macs", "flops", "macs_inference", "flops_inference", "train_step_s", "inference_s",
              "saved_activation_bytes_per_sample",
              "peak_memory_bytes", "peak_memory_delta_bytes", "peak_memory_inference_bytes",
              "peak_memory_inference_delta_bytes")
MACS_NOTE = (
    "MACs: one forward pass, batch 1, at the patch, deep supervision off, counted with torch.utils.flop_counter "
    "(convolutions, linear layers, matrix products; global attention's QK^T and AV through scaled_dot_product_"
    "attention) plus LM-Net's neighbourhood attention QK^T and AV as the module declares them (extra_macs: "
    "positions x window x channels each); element-wise ops, norms, activations, softmax not counted. 'MACs' is the "
    "network as trained (LM-Net's parallel branches), 'inference' as nnU-Net's predictor runs it (LM-Net fused). "
    "FLOPs = 2 x MACs."
)
INTERLEAVED_NOTE = ("interleaved: all networks in one fresh process; per phase (inference, then training) one run "
                    "of each network per round, the order reversed every other round")


# --------------------------------------------------------------------------------------------- networks and loss
def build_benchmark_network(arch: str, configuration: dict, in_channels: int, num_outputs: int,
                            deep_supervision: bool):
    """(network, ConfigurationManager the trainer would see for it)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    from nnunet_lmnet.plans.derive import derive_architecture
    from nnunet_lmnet.training.network_builder import build_network

    if arch == "default":
        cm = ConfigurationManager(configuration)
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, in_channels, num_outputs,
                                     allow_init=True, deep_supervision=deep_supervision)
        return net, cm
    # Our trainers rewrite the plans first (plans.derive); the same view gives the network's own DS scales.
    cm = ConfigurationManager(dict(configuration,
                                   architecture=derive_architecture(arch, configuration["architecture"])))
    return build_network(arch, cm, in_channels, num_outputs, deep_supervision), cm


def _ds_loss(cm, n_outputs: int, regions: bool):
    import numpy as np
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    if regions:
        loss = DC_and_BCE_loss({}, {"batch_dice": cm.batch_dice, "do_bg": True, "smooth": 1e-5, "ddp": False},
                               use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)
    else:
        loss = DC_and_CE_loss({"batch_dice": cm.batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                              weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    weights = np.array([1 / 2 ** i for i in range(n_outputs)])
    weights[-1] = 0  # nnU-Net leaves the lowest output out of the loss
    return loss, DeepSupervisionWrapper(loss, weights / weights.sum())


def _targets(cm, batch: int, num_outputs: int, regions: bool, device):
    """Random targets at nnU-Net's deep-supervision scales (as DownsampleSegForDSTransform rounds them)."""
    import numpy as np
    import torch

    scales = list(1 / np.cumprod(np.vstack(cm.pool_op_kernel_sizes), axis=0))[:-1]
    shapes = [tuple(int(round(p * s)) for p, s in zip(cm.patch_size, sc)) for sc in scales]
    if regions:
        return [torch.randint(0, 2, (batch, num_outputs, *s), device=device).float() for s in shapes]
    return [torch.randint(0, num_outputs, (batch, 1, *s), device=device, dtype=torch.int16) for s in shapes]


def count_network_macs(net, input_shape) -> tuple[int, int]:
    """(MACs as trained, MACs as the predictor runs it) with ``complexity.count_macs``; DS must already be off."""
    from .complexity import count_macs

    fusable = [m for m in net.modules() if hasattr(m, "fuse_in_eval")]
    was_training = net.training
    try:
        for m in fusable:
            m.fuse_in_eval = False  # count LM-Net's parallel branches, the form that is trained
        macs = count_macs(net, input_shape)
        for m in fusable:
            m.fuse_in_eval = True
        macs_inference = count_macs(net, input_shape) if fusable else macs
    finally:
        net.train(was_training)
    return macs, macs_inference


# --------------------------------------------------------------------------------------------- memory (child)
def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:  # "5" resets the peak RSS (VmHWM), Linux >= 4.0
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    peak = _status_bytes("VmHWM")
    if peak is None:  # not Linux: lifetime peak (ru_maxrss is kB on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if platform.system() == "Darwin" else 1024)
    return peak


class _Memory:
    """Peak of one phase: CUDA allocated memory, or the process' resident set size (where the peak cannot be reset,
    the lifetime peak, which the training phase dominates)."""

    def __init__(self, device):
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"

    def start(self) -> int | None:
        """Reset the peak; returns the current amount."""
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            return int(self.torch.cuda.memory_allocated())
        _reset_peak_rss()
        return _status_bytes("VmRSS")

    def peak(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize()
            return int(self.torch.cuda.max_memory_allocated())
        return _peak_rss()


# --------------------------------------------------------------------------------------------- measurement (child)
def _timed(fn, repeats: int, warmup: int, sync) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


class _Runs:
    """One network of a job, ready to time: its inference pass and its training step as nnU-Net runs them."""

    def __init__(self, job: dict, arch: str):
        import torch

        self.torch = torch
        self.device = torch.device(job["device"])
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # as nnU-Net's run_training
        self.sync = torch.cuda.synchronize if cuda else (lambda: None)
        self.amp = (lambda: torch.autocast("cuda", dtype=torch.float16)) if cuda else contextlib.nullcontext
        self.arch, in_ch, out_ch, regions = arch, job["in_channels"], job["num_outputs"], job["regions"]
        torch.manual_seed(0)
        net, cm = build_benchmark_network(arch, job["configuration"], in_ch, out_ch, deep_supervision=True)
        self.net, self.cm = net, cm
        self.record = {"arch": arch, "name": DISPLAY[arch],
                       "network_class": f"{type(net).__module__}.{type(net).__qualname__}",
                       "strides": [list(map(int, s)) for s in cm.pool_op_kernel_sizes],
                       "threads": torch.get_num_threads()}
        from .complexity import count_parameters_in_state_dict

        self.record["params"] = count_parameters_in_state_dict(net.state_dict())
        net.to(self.device)
        self.patch, batch = list(cm.patch_size), int(cm.batch_size)
        # Loss and optimizer before a memory baseline: importing nnU-Net's loss modules alone adds resident memory.
        plain_loss, self.loss = _ds_loss(cm, len(cm.pool_op_kernel_sizes) - 1, regions)
        self.train_net = net
        if job["compile"]:  # what nnU-Net does on CUDA unless nnUNet_compile is off
            self.train_net = torch.compile(net)
            plain_loss.dc = torch.compile(plain_loss.dc)
        self.optimizer = torch.optim.SGD(net.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
        self.scaler = None
        if cuda:  # torch.GradScaler is torch >= 2.3
            self.scaler = torch.GradScaler("cuda") if hasattr(torch, "GradScaler") else torch.cuda.amp.GradScaler()
        self.x1 = torch.randn(1, in_ch, *self.patch, device=self.device)
        self.x = torch.randn(batch, in_ch, *self.patch, device=self.device)
        self.targets = _targets(cm, batch, out_ch, regions, self.device)

    def for_inference(self) -> None:
        self.net.decoder.deep_supervision = False  # nnU-Net's toggle (contract item 3), as its predictor builds it
        self.net.eval()

    def for_training(self) -> None:
        self.net.decoder.deep_supervision = True
        self.net.train()

    def infer(self) -> None:
        with self.torch.inference_mode(), self.amp():
            self.net(self.x1)

    def train_step(self) -> None:
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        with self.amp():
            value = self.loss(self.train_net(self.x), self.targets)
        if self.scaler is not None:
            self.scaler.scale(value).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 12)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            value.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 12)
            self.optimizer.step()

    def counts(self) -> dict:
        """Saved activations, MACs and FLOPs (after the timed phases: they do not raise the memory peaks)."""
        self.optimizer.zero_grad(set_to_none=True)
        out = {"saved_activation_bytes_per_sample": _saved_per_sample(self.net, self.x1.shape[1], self.patch,
                                                                      self.device)}
        self.net.decoder.deep_supervision = False
        self.net.cpu()
        out["macs"], out["macs_inference"] = count_network_macs(self.net, (1, self.x1.shape[1], *self.patch))
        out["flops"], out["flops_inference"] = 2 * out["macs"], 2 * out["macs_inference"]
        return out


def _is_out_of_memory(e: RuntimeError) -> bool:
    return "out of memory" in str(e).lower() or "can't allocate memory" in str(e)


def _measure(job: dict) -> dict:
    """Runs in a fresh process: build, inference timing, train-step timing, counts. Returns one record."""
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    runs = _Runs(job, job["arch"])
    rec = runs.record
    mem = _Memory(runs.device)
    try:
        rec["memory_baseline_bytes"] = mem.start()  # weights only, before the first forward
        # Inference first: on CPU the allocator keeps freed memory, so training's activations would inflate an
        # inference peak measured after it; the other way round training reuses that memory.
        runs.for_inference()
        times = _timed(runs.infer, job["repeats"], job["warmup"], runs.sync)
        rec["peak_memory_inference_bytes"] = mem.peak()
        rec["inference_times_s"], rec["inference_s"] = times, statistics.median(times)
        runs.for_training()
        mem.start()
        times = _timed(runs.train_step, job["repeats"], job["warmup"], runs.sync)
        rec["peak_memory_bytes"] = mem.peak()
        rec["train_step_times_s"], rec["train_step_s"] = times, statistics.median(times)
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError or the CPU allocator's failure: record it, go on
        if not _is_out_of_memory(e):
            raise
        return {**rec, "error": f"out of memory: {str(e).splitlines()[0]}"}
    if rec["memory_baseline_bytes"] is not None:
        for key in ("peak_memory_bytes", "peak_memory_inference_bytes"):
            rec[key.replace("_bytes", "_delta_bytes")] = rec[key] - rec["memory_baseline_bytes"]
    rec.update(runs.counts())
    return rec


def _interleaved_rounds(runs: list, phase: str, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Times of `phase` ('infer' or 'train_step') per network, one run of each network per round, the order
    reversed every other round, so slow spells of a shared machine fall on all of them alike."""
    for r in runs:
        getattr(r, "for_inference" if phase == "infer" else "for_training")()
        for _ in range(warmup):
            getattr(r, phase)()
    times: dict[str, list[float]] = {r.arch: [] for r in runs}
    for i in range(repeats):
        for r in (runs if i % 2 == 0 else runs[::-1]):
            r.sync()
            t0 = time.perf_counter()
            getattr(r, phase)()
            r.sync()
            times[r.arch].append(time.perf_counter() - t0)
    return times


def _measure_interleaved(job: dict) -> dict:
    """Runs in a fresh process: every network of `job['archs']` built in it, their inference passes and then
    their training steps timed round by round. No peak memory: one process holds all the networks."""
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    runs = [_Runs(job, arch) for arch in job["archs"]]
    try:
        inference = _interleaved_rounds(runs, "infer", job["repeats"], job["warmup"])
        training = _interleaved_rounds(runs, "train_step", job["repeats"], job["warmup"])
    except RuntimeError as e:
        if not _is_out_of_memory(e):
            raise
        error = f"out of memory: {str(e).splitlines()[0]} (all networks share one process with --interleaved)"
        return {r.arch: {**r.record, "error": error} for r in runs}
    networks = {}
    for r in runs:
        rec = r.record
        rec["inference_times_s"], rec["inference_s"] = inference[r.arch], statistics.median(inference[r.arch])
        rec["train_step_times_s"], rec["train_step_s"] = training[r.arch], statistics.median(training[r.arch])
        rec.update(r.counts())
        networks[r.arch] = rec
    return networks


def paired_ratios(networks: dict) -> None:
    """Per network, the median over rounds of (its time / the default network's time in the same round): the
    figure a shared machine's slow spells move least. Only for interleaved runs (same number of rounds)."""
    base = networks.get("default")
    for rec in networks.values():
        if base is None or "error" in base or "error" in rec:
            rec["paired_ratio_to_default"] = None
            continue
        rec["paired_ratio_to_default"] = {
            key: statistics.median(t / b for t, b in zip(rec[f"{key}_times_s"], base[f"{key}_times_s"]))
            for key in ("train_step", "inference")}


def _saved_per_sample(net, in_channels: int, patch, device) -> int:
    """Saved-for-backward bytes of one training forward of one sample (DS on, as trained; fp32)."""
    import torch

    from .saved_activations import saved_bytes_per_sample

    net.decoder.deep_supervision = True
    net.train()
    x = torch.randn(1, in_channels, *patch, device=device)
    return saved_bytes_per_sample(net, x)


def _in_fresh_process(job: dict, interleaved: bool = False) -> dict:
    """One network's record (`_measure`), or with `interleaved` all networks' records by arch."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_measure_interleaved if interleaved else _measure, job).result()
        except BrokenProcessPool:  # e.g. killed by the kernel's out-of-memory killer
            archs = job["archs"] if interleaved else [job["arch"]]
            died = {a: {"arch": a, "name": DISPLAY[a], "error": "the measuring process died (out of memory?)"}
                    for a in archs}
            return died if interleaved else died[job["arch"]]


# --------------------------------------------------------------------------------------------- descriptions
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, threads: int | None, threads_source: str) -> dict:
    import importlib.metadata as md
    import importlib.util

    import torch

    def version(dist):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    info = {
        "hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "cpus_available": len(affinity) if affinity else None,
        "torch": torch.__version__, "nnunetv2": version("nnunetv2"),
        "dynamic_network_architectures": version("dynamic_network_architectures"),
        "nnunet_lmnet": version("nnunet-lmnet"), "natten": importlib.util.find_spec("natten") is not None,
        "device": device, "threads": threads or torch.get_num_threads(), "threads_source": threads_source,
    }
    if device == "cuda":
        info.update(device_name=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["device_name"] = info["cpu_model"]
    return info


def describe_configuration(configuration: dict, plans: dict | None, name: str | None, in_channels: int,
                           num_outputs: int, regions: bool, source: str | None) -> dict:
    arch = configuration["architecture"]
    return {
        "source": source, "dataset_name": (plans or {}).get("dataset_name"),
        "plans_name": (plans or {}).get("plans_name"), "configuration": name,
        "patch_size": list(configuration["patch_size"]), "batch_size": int(configuration["batch_size"]),
        "spacing": configuration.get("spacing"), "network_class_name": arch["network_class_name"],
        "strides": arch["arch_kwargs"].get("strides"), "kernel_sizes": arch["arch_kwargs"].get("kernel_sizes"),
        "in_channels": in_channels, "num_outputs": num_outputs, "regions": regions,
    }


# --------------------------------------------------------------------------------------------- inputs
def resolve_inputs(dataset: str | None = None, plans_name: str = "nnUNetPlans", plans_file: Path | None = None,
                   synthetic: str | None = None, configuration: str | None = None, patch_size=None,
                   batch_size: int | None = None, in_channels: int | None = None,
                   classes: int | None = None) -> dict:
    """Keyword arguments of ``run_benchmark`` (plus 'label') from one of: a dataset (-d), a plans file, --synthetic.

    Channels: explicit values, else the dataset.json next to the plans (via nnU-Net's LabelManager), else 1 / 2."""
    from ..nnunet_paths import load_json_file, require_env_folder, resolve_dataset_name

    dataset_json = None
    if synthetic is not None:
        from . import synthetic_plans as sp

        if synthetic not in sp.SYNTHETIC_PATCH:
            raise UserError(f"--synthetic takes one of {sorted(sp.SYNTHETIC_PATCH)}, got {synthetic!r}")
        name = configuration or sp.SYNTHETIC_CONFIGURATION_NAME[synthetic]
        try:
            cfg = sp.synthetic_configuration(synthetic, patch_size, batch_size, in_channels or 1, classes or 2)
        except ValueError as e:
            raise UserError(f"--patch: {e}") from None
        plans, source, label = None, "synthetic nnU-Net default plans", f"synthetic_{synthetic}"
    else:
        if dataset is not None:
            folder = require_env_folder("nnUNet_preprocessed") / resolve_dataset_name(dataset)
            plans_path = folder / f"{plans_name}.json"
            if not plans_path.is_file():
                raise UserError(f"plans file not found: {plans_path}. Run `nnUNetv2_plan_and_preprocess -d {dataset}` "
                                f"first, or name existing plans with -p (e.g. -p nnUNetResEncUNetMPlans).")
            label = f"{folder.name}__{plans_name}"
        else:
            plans_path = Path(plans_file)
            if not plans_path.is_file():
                raise UserError(f"plans file not found: {plans_path}. Give the path of a plans .json (--plans FILE); "
                                f"for a plans identifier of a preprocessed dataset use -d DATASET -p PLANS.")
            label = plans_path.stem
        plans = load_json_file(plans_path, "plans file")
        configurations = sorted(plans.get("configurations", {}))
        if configuration not in configurations:
            what = "-c is required" if configuration is None else f"{plans_path} has no configuration {configuration!r}"
            raise UserError(f"{what}; choose one of {configurations} with -c.")
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        name = configuration
        cfg = dict(PlansManager(plans).get_configuration(name).configuration)  # resolves inherits_from
        if batch_size:
            cfg["batch_size"] = int(batch_size)
        if patch_size:
            cfg["patch_size"] = _checked_patch(cfg, patch_size)
        if (plans_path.parent / "dataset.json").is_file():  # nnU-Net keeps it next to preprocessed and trained plans
            dataset_json = load_json_file(plans_path.parent / "dataset.json", "dataset.json")
        source, label = str(plans_path), f"{label}__{name}"
    if "architecture" not in cfg:
        raise UserError(f"configuration {name!r} has no 'architecture' block; re-plan with nnunetv2 >= 2.3.")

    n_in, n_out, regions = 1, 2, False
    if dataset_json is not None:
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        pm = PlansManager(plans)
        lm = pm.get_label_manager(dataset_json)
        n_in = determine_num_input_channels(pm, pm.get_configuration(name), dataset_json)
        n_out, regions = lm.num_segmentation_heads, lm.has_regions
    return {"configuration": cfg, "plans": plans, "configuration_name": name, "source": source, "label": label,
            "in_channels": int(in_channels or n_in), "num_outputs": int(classes or n_out),
            "regions": bool(regions and not classes)}


def _checked_patch(cfg: dict, patch_size) -> list[int]:
    from nnunet_lmnet.architectures.stage_geometry import total_stride

    patch = [int(p) for p in patch_size]
    strides = cfg["architecture"]["arch_kwargs"].get("strides")
    if len(patch) != len(cfg["patch_size"]):
        raise UserError(f"--patch needs {len(cfg['patch_size'])} sizes for this configuration, got {patch}")
    divisor = list(total_stride(strides)) if strides else [1] * len(patch)
    if any(p % d for p, d in zip(patch, divisor)):
        raise UserError(f"--patch {patch} is not divisible by the plans' total stride {divisor} per axis")
    return patch


# --------------------------------------------------------------------------------------------- run
def check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU. Use --device cpu, or install "
                            "a CUDA build of PyTorch that matches the driver (check torch.cuda.is_available()).")


def add_ratios(networks: dict) -> str:
    """Set each record's ratios to the 'default' network of the same run; returns the note for the report."""
    base = networks.get("default")
    if base is None or "error" in base:
        for rec in networks.values():
            rec["ratio_to_default"] = None
        return "omitted: " + ("'default' not among the benchmarked networks" if base is None
                              else "the default network failed")
    for rec in networks.values():
        rec["ratio_to_default"] = {k: rec[k] / base[k] for k in RATIO_KEYS
                                   if isinstance(rec.get(k), (int, float)) and isinstance(base.get(k), (int, float))
                                   and base[k]}
    return "(×) = value / value of nnU-Net's default network in this run"


def run_benchmark(configuration: dict, plans: dict | None = None, archs=ARCHS, device: str = "cpu",
                  repeats: int = 5, warmup: int = 2, threads: int | None = None, in_channels: int = 1,
                  num_outputs: int = 2, regions: bool = False, configuration_name: str | None = None,
                  compile_network: bool = False, source: str | None = None, interleaved: bool = False) -> dict:
    """Benchmark `archs` on one (resolved) plans configuration dict; returns the JSON-ready result.

    `num_outputs` = nnU-Net's ``label_manager.num_segmentation_heads`` (classes incl. background, or regions).
    `interleaved`: all networks in one fresh process, timed round by round (`repeats` rounds), with paired
    ratios; no peak memory. Otherwise one fresh process per network, one after the other."""
    archs = list(dict.fromkeys(archs))
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or not archs:
        raise UserError(f"unknown network(s) {unknown}; choose from {list(ARCHS)}")
    if repeats < 1 or warmup < 0:
        raise UserError("--repeats must be >= 1 and --warmup >= 0")
    if threads is not None and threads < 1:
        raise UserError("--threads must be >= 1")
    check_device(device)
    if compile_network and device != "cuda":
        raise UserError("--compile is for --device cuda (nnU-Net never compiles on CPU)")
    job = {"configuration": configuration, "in_channels": int(in_channels), "num_outputs": int(num_outputs),
           "regions": bool(regions), "device": device, "repeats": int(repeats), "warmup": int(warmup),
           "threads": threads, "compile": bool(compile_network)}
    if interleaved:
        networks = _in_fresh_process(dict(job, archs=archs), interleaved=True)
    else:
        networks = {arch: _in_fresh_process(dict(job, arch=arch)) for arch in archs}
    ratios_note = add_ratios(networks)
    if interleaved:
        paired_ratios(networks)
    used_threads = threads or max((rec.get("threads", 0) for rec in networks.values()), default=0) or None
    return {
        "machine": machine_info(device, used_threads, "--threads" if threads else "torch default"),
        "configuration": describe_configuration(configuration, plans, configuration_name, in_channels, num_outputs,
                                                regions, source),
        "settings": {"repeats": repeats, "warmup": warmup, "statistic": "median", "compile": bool(compile_network),
                     "amp": "fp16 autocast + GradScaler" if device == "cuda" else "none (fp32)",
                     "timing": INTERLEAVED_NOTE if interleaved else "one fresh process per network, in turn",
                     "memory": "not measured (--interleaved: all networks share one process)" if interleaved
                     else "torch.cuda.max_memory_allocated" if device == "cuda"
                     else "peak resident set size of a fresh child process (Linux VmHWM)"},
        "notes": {"macs": MACS_NOTE, "ratios": ratios_note},
        "networks": networks,
    }


# --------------------------------------------------------------------------------------------- report
def _fmt_bytes(n) -> str:
    if n is None:
        return "n/a"
    for div, unit in ((2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def _fmt_s(t) -> str:
    return "n/a" if t is None else (f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s")


def markdown_report(result: dict) -> str:
    from ..report_output import fmt_count, md_table

    m, c, s = result["machine"], result["configuration"], result["settings"]
    cpu = m["device"] == "cpu"

    def ratio(rec, key):
        r = (rec.get("ratio_to_default") or {}).get(key)
        return None if r is None or rec["arch"] == "default" else f"{r:.2f}×"

    def with_ratio(rec, key, text):
        r = ratio(rec, key)
        return f"{text} ({r})" if r else text

    def timed(rec, key):
        text = with_ratio(rec, f"{key}_s", _fmt_s(rec[f"{key}_s"]))
        paired = (rec.get("paired_ratio_to_default") or {}).get(key)
        if paired is None or rec["arch"] == "default":
            return text
        return f"{text[:-1]}, paired {paired:.2f}×)" if text.endswith(")") else f"{text} (paired {paired:.2f}×)"

    def memory(rec, peak_key):
        delta_key = peak_key.replace("_bytes", "_delta_bytes")
        if rec.get(delta_key) is None:
            return with_ratio(rec, peak_key, _fmt_bytes(rec.get(peak_key)))
        # on CPU the peak includes the process' libraries: the ratio is of the increase Δ
        r = ratio(rec, delta_key if cpu else peak_key)
        return f"{_fmt_bytes(rec[peak_key])} (Δ {_fmt_bytes(rec[delta_key])}{', ' + r if r else ''})"

    rows = []
    for rec in result["networks"].values():
        if "error" in rec:
            rows.append([rec["name"], f"failed: {rec['error']}"] + [""] * 7)
            continue
        rows.append([
            rec["name"],
            with_ratio(rec, "params", fmt_count(rec["params"])),
            with_ratio(rec, "macs", fmt_count(rec["macs"])),
            with_ratio(rec, "macs_inference", fmt_count(rec["macs_inference"])),
            timed(rec, "train_step"),
            timed(rec, "inference"),
            with_ratio(rec, "saved_activation_bytes_per_sample",
                       _fmt_bytes(rec.get("saved_activation_bytes_per_sample"))),
            memory(rec, "peak_memory_bytes"),
            memory(rec, "peak_memory_inference_bytes"),
        ])
    header = ["Network", "Parameters", "MACs", "MACs (inference form)", f"Train step (batch {c['batch_size']})",
              "Inference (1 patch)", "Saved activations per sample", "Peak memory, training",
              "Peak memory, inference"]
    where = " / ".join(str(v) for v in (c["dataset_name"] or c["source"], c["plans_name"], c["configuration"]) if v)
    device = m["device_name"] + ("" if not cpu else f", {m['threads']} thread(s) ({m['threads_source']})")
    lines = [
        f"# Compute benchmark: {where}",
        "",
        f"- Machine: {device}; {m['cpu_count']} CPUs; torch {m['torch']}, nnunetv2 {m['nnunetv2']}",
        f"- Configuration: patch {'x'.join(map(str, c['patch_size']))}, batch {c['batch_size']}, "
        f"{len(c['strides'] or [])} stages, strides {c['strides']}, {c['in_channels']} input channel(s), "
        f"{c['num_outputs']} output(s){' (regions)' if c['regions'] else ''}",
        f"- Times: median of {s['repeats']} after {s['warmup']} warm-up; training step = forward + backward + SGD "
        f"step with nnU-Net's deep-supervision loss; AMP: {s['amp']}{'; torch.compile' if s['compile'] else ''}",
        f"- Timing: {s.get('timing', 'one fresh process per network, in turn')}"
        + ("; paired = median over rounds of (time / the default network's time in the same round)"
           if s.get("timing") == INTERLEAVED_NOTE else ""),
        f"- Memory: {s['memory']}" + ("" if s.get("timing") == INTERLEAVED_NOTE else
                                      "; Δ = increase over the amount before the first forward (weights loaded)"
                                      + ("; on CPU the ratio is of Δ" if cpu else "")),
        "- Saved activations: bytes autograd keeps for backward after one training forward of one sample at the "
        "patch (fp32, each storage once, parameters excluded; blocks recomputed in backward count the inputs they "
        "keep); independent of the device",
        f"- Ratios: {result['notes']['ratios']}",
        f"- {MACS_NOTE}",
        "",
        md_table(header, rows),
    ]
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_dir: Path, overwrite: bool) -> tuple[Path, Path]:
    import json

    from ..report_output import atomic_write_text, refuse_existing

    paths = report_paths(out_dir)
    refuse_existing(paths, overwrite)
    atomic_write_text(paths[0], json.dumps(result, indent=2) + "\n")
    atomic_write_text(paths[1], markdown_report(result))
    return paths


def report_paths(out_dir: Path) -> tuple[Path, Path]:
    return out_dir / "benchmark.json", out_dir / "benchmark.md"
