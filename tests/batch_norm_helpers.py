"""BatchNorm helpers for the fusion tests: statistics that make a fold visible, and a record of BN calls."""
import torch


def randomize_bn(module, seed=0):
    """Random running statistics and affine parameters in every BatchNorm of `module`."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.2)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def batch_norm_calls(module) -> list:
    """A list every BatchNorm of `module` appends itself to when it runs."""
    calls = []
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(lambda mod, i, o: calls.append(mod))
    return calls
