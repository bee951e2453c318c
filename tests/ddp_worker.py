"""One rank of a multi-process DDP run on CPU (gloo), with the network wrapped as nnU-Net wraps it.

Started by test_lifecycle with torch.multiprocessing.spawn. nnU-Net's own DDP path (``nnUNetv2_train -num_gpus 2``)
needs CUDA (NCCL, one GPU per rank); this reproduces the part of it that concerns our networks: the network built
by our trainers' ``build_network_architecture`` from (derived) plans, ``DDP(network)`` without
``find_unused_parameters`` (CPU: no ``device_ids``; no SyncBatchNorm, which needs CUDA), nnU-Net's own optimiser,
deep-supervision loss with ``ddp=True`` and training step (its methods, called on a stand-in for the trainer), and
different random data on every rank.
"""
from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

# name: (architecture, strides, kernel sizes, patch) -- full preset depth (5 stages), so every block is in use
CASES = {
    "lmnet-2d": ("lmnet", [[1, 1]] + [[2, 2]] * 4, [[3, 3]] * 5, [32, 32]),
    "lgmsnet-2d": ("lgmsnet", [[1, 1]] + [[2, 2]] * 4, [[3, 3]] * 5, [32, 32]),
    "lmnet-3d": ("lmnet", [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                 [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [8, 32, 32]),
    "lgmsnet-3d": ("lgmsnet", [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                   [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], [8, 32, 32]),
}
STEPS = 3  # DDP reports a parameter without gradient when the *next* step starts: at least 2
DATASET_JSON = {"labels": {"background": 0, "a": 1, "b": 2}, "channel_names": {"0": "x"}, "numTraining": 4,
                "file_ending": ".nii.gz"}


def run(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        results = {name: _train(name, rank, world) for name in CASES}
    finally:
        dist.destroy_process_group()
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(results, f)


def _train(name: str, rank: int, world: int) -> dict:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nnunet_lmnet.plans.derive import derive_plans
    from nnunet_lmnet.training.trainers import nnUNetTrainerLGMSNet, nnUNetTrainerLMNet
    from synthetic_plans import default_configuration, plans_with

    arch, strides, kernels, patch = CASES[name]
    trainer_class = {"lmnet": nnUNetTrainerLMNet, "lgmsnet": nnUNetTrainerLGMSNet}[arch]
    config_name = "2d" if len(patch) == 2 else "3d_fullres"
    # as the trainers do: derive the plans first, so the deep-supervision scales are our network's
    plans = derive_plans(plans_with({config_name: default_configuration(strides, kernels, patch)}), arch)
    pm = PlansManager(plans)
    cm = pm.get_configuration(config_name)
    label_manager = pm.get_label_manager(DATASET_JSON)
    heads = label_manager.num_segmentation_heads

    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    network = trainer_class.build_network_architecture(pm, cm, 1, heads, True)
    recompute = any(getattr(m, "recompute", False) is True for m in network.modules())
    # the attributes of nnUNetTrainer that its _build_loss, configure_optimizers and train_step read
    trainer = SimpleNamespace(is_ddp=True, enable_deep_supervision=True, configuration_manager=cm,
                              label_manager=label_manager, device=torch.device("cpu"), grad_scaler=None,
                              initial_lr=1e-2, weight_decay=3e-5, num_epochs=1000,
                              _do_i_compile=lambda: False)
    trainer._get_deep_supervision_scales = lambda: nnUNetTrainer._get_deep_supervision_scales(trainer)
    trainer.network = DDP(network)  # as nnUNetTrainer.initialize, minus device_ids (CPU) and SyncBatchNorm (CUDA)
    trainer.optimizer, _ = nnUNetTrainer.configure_optimizers(trainer)
    trainer.loss = nnUNetTrainer._build_loss(trainer)
    start = _flat(network.parameters())

    generator = torch.Generator().manual_seed(100 + rank)  # different data per rank
    scales = trainer._get_deep_supervision_scales()
    losses, without_grad = [], []
    for step in range(STEPS):
        # nnU-Net splits the planned batch over the ranks: its minimum batch of 2 is 1 per rank here
        data = torch.randn(1, 1, *patch, generator=generator)
        seg = torch.randint(0, heads, (1, 1, *patch), generator=generator).float()
        target = [F.interpolate(seg, size=[round(p * s) for p, s in zip(patch, scale)], mode="nearest")
                  for scale in scales]
        losses.append(float(nnUNetTrainer.train_step(trainer, {"data": data, "target": target})["loss"]))
        if step == 0:
            without_grad = [n for n, p in network.named_parameters() if p.grad is None]

    mine = _flat(network.parameters())
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    loss_rows = [None] * world
    dist.all_gather_object(loss_rows, losses)
    return {
        "max_rank_difference": max(float((g - gathered[0]).abs().max()) for g in gathered),
        "max_change": float((mine - start).abs().max()),
        "losses": loss_rows,
        "without_grad": without_grad,
        "recompute": recompute,
        "num_outputs": len(scales),
    }


def _flat(parameters):
    import torch

    return torch.cat([p.detach().reshape(-1).clone() for p in parameters])
