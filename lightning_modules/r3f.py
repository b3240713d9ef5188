"""R3F (Aghajanyan et al., 2020): symmetric KL between predictions on clean and noised inputs."""

import torch
import torch.nn.functional as F


def symmetric_kl(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(p||q) + KL(q||p) for logits (N, C) (any leading shape, softmax over the last axis)."""
    p, q = F.log_softmax(clean.float(), -1), F.log_softmax(noisy.float(), -1)
    kl = (p.exp() * (p - q)).sum(-1) + (q.exp() * (q - p)).sum(-1)
    return kl.mean()
