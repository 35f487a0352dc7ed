"""Sinusoidal embeddings of the diffusion step.

The Transformer position code (Vaswani et al. 2017) applied to the step index, as in DDPM (Ho et
al., NeurIPS 2020), DiffRec (Du et al. 2023, Eq. 15) and DreamRec (Yang et al., NeurIPS 2023).
Frequencies are 1/max_period^(j/half), j = 0..half-1, half = dim // 2; the first half of the
features holds the sines and the second half the cosines. DiffRec's Eq. 15 interleaves them
(sin at 2j, cos at 2j+1): a fixed permutation of the features, which makes no difference when the
result is added to learned embeddings or fed to a linear layer. DreamRec's code divides by
half - 1 instead of half, so its lowest frequency is exactly 1/max_period; the two differ only in
how the frequencies are spread.

Models pass the same 0-based step index ``t`` that
:class:`~recbole_diffusion.diffusion.gaussian.GaussianDiffusion` uses (index t = step t + 1).
"""

import math

import torch
from torch import nn


def sinusoidal_step_embedding(t, dim, max_period=10000):
    """Embed step indices ``t`` ([B], any numeric dtype) as [B, dim] float32 features.

    An odd ``dim`` gets a final zero column.
    """
    if dim < 1:
        raise ValueError(f"step embedding dim must be positive; got {dim}")
    t = torch.as_tensor(t)
    if t.dim() == 0:
        t = t.reshape(1)
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1)
    frequencies = torch.exp(-math.log(max_period) * exponents)
    angles = t.to(torch.float32)[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


class SinusoidalStepEmbedding(nn.Module):
    """:func:`sinusoidal_step_embedding` as a module, optionally followed by DreamRec's step MLP.

    Args:
        dim: output size d.
        mlp: follow the sinusoid with Linear(d, 2d) -> GELU -> Linear(2d, d), DreamRec's
            ``step_mlp``.
        max_period: the longest wavelength's scale.
    """

    def __init__(self, dim, mlp=False, max_period=10000):
        super().__init__()
        if dim < 1:
            raise ValueError(f"step embedding dim must be positive; got {dim}")
        self.dim = dim
        self.max_period = max_period
        self.mlp = None
        if mlp:
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, t):
        embedding = sinusoidal_step_embedding(t, self.dim, self.max_period)
        if self.mlp is not None:
            embedding = self.mlp(embedding.to(self.mlp[0].weight.dtype))
        return embedding

    def extra_repr(self):
        return f"dim={self.dim}, max_period={self.max_period}"
