"""Random-init PyTorch references with every norm scale/bias and every bias randomised
(issue 18): freshly initialised LayerNorms are identities and biases zero, so a swapped norm or
a dropped bias would be invisible to random-init parity."""

from __future__ import annotations


def randomise_norms_and_biases(module, seed: int, scale_std: float = 0.2, bias_std: float = 0.05) -> None:
    import torch  # noqa: PLC0415

    gen = torch.Generator().manual_seed(seed)
    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.modules.batchnorm._BatchNorm)
    with torch.no_grad():
        for name, p in module.named_parameters():
            owner = module.get_submodule(name.rpartition(".")[0])
            if isinstance(owner, norms) and name.endswith("weight"):
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * scale_std)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * bias_std)
