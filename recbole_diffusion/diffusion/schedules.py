"""Noise schedules β_1..β_N shared by every diffusion model of the plugin.

Each schedule returns the per-step variances β_n of the forward process
q(x_n | x_{n-1}) = N(sqrt(1 - β_n) x_{n-1}, β_n I), n = 1..N, as a float64 tensor of shape [N]
(entry ``i`` is β_{i+1}); ᾱ_n = ∏_{i<=n} (1 - β_i) and ᾱ_0 = 1.

* ``linear``: β rises linearly from 1e-4 to 0.02 (Ho et al., "Denoising Diffusion Probabilistic
  Models", NeurIPS 2020). Not rescaled by 1000/N: DreamRec and ADARec use these values as they are.
* ``cosine``: ᾱ_n = g(n)/g(0), g(n) = cos²((n/N + s)/(1 + s) · π/2), s = 0.008 (Nichol & Dhariwal,
  "Improved Denoising Diffusion Probabilistic Models", ICML 2021), β clipped to at most 0.999.
* ``sqrt``: ᾱ_n = 1 - sqrt(n/N + 0.0001) (Li et al., Diffusion-LM, NeurIPS 2022; the default of
  Du et al., "Sequential Recommendation with Diffusion Models", arXiv 2304.04541, 2023, §5.3.1),
  β_n = 1 - ᾱ_n/ᾱ_{n-1} with ᾱ_0 = 1, clipped to at most 0.999.
* ``exp``: a discretised variance-preserving SDE with β(s) = β_min + s(β_max - β_min), β_min = 0.1,
  β_max = 10, as in the code of Yang et al., "Generate What You Prefer: Reshaping Sequential
  Recommendation via Guided Diffusion" (DreamRec, NeurIPS 2023), where it is the default.
"""

import math
import operator

import torch

SCHEDULES = ("linear", "cosine", "sqrt", "exp")


def alphas_cumprod_from_betas(betas):
    """ᾱ_n = ∏_{i<=n} (1 - β_i), in float64."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def betas_from_alphas_cumprod(alphas_cumprod):
    """Inverse of :func:`alphas_cumprod_from_betas`: β_n = 1 - ᾱ_n/ᾱ_{n-1} with ᾱ_0 = 1."""
    alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / previous


def _betas_from_alpha_bar_fn(alpha_bar, n_steps, max_beta, min_beta):
    # ᾱ is given in closed form on n = 0..N; the clip keeps β < 1 where the closed form reaches or
    # crosses zero at the end (cosine: g(N) = 0; sqrt: 1 - sqrt(1 + 1e-4) < 0), so that ᾱ_N > 0
    # and 1/sqrt(ᾱ) stays finite.
    steps = torch.arange(n_steps + 1, dtype=torch.float64)
    values = alpha_bar(steps)
    current, previous = values[1:], values[:-1]
    valid = (current > 0) & (previous > 0)
    betas = torch.where(valid, 1.0 - current / previous, torch.ones_like(current))
    return betas.clamp(min=min_beta, max=max_beta)


def _linear(n_steps, beta_start=1e-4, beta_end=0.02):
    return torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)


def _cosine(n_steps, s=0.008, max_beta=0.999, min_beta=0.0):
    # DreamRec's code clips cosine betas to [1e-4, 0.9999]; pass min_beta/max_beta to reproduce it.
    def alpha_bar(n):
        g = torch.cos((n / n_steps + s) / (1.0 + s) * math.pi / 2.0) ** 2
        return g / math.cos(s / (1.0 + s) * math.pi / 2.0) ** 2

    return _betas_from_alpha_bar_fn(alpha_bar, n_steps, max_beta, min_beta)


def _sqrt(n_steps, offset=1e-4, max_beta=0.999, min_beta=0.0):
    # ᾱ_0 is taken as 1 (no noise before step 1, as Du et al. set β_0 = 0), so the cumulative
    # product equals the paper's closed form exactly for n < N. Diffusion-LM's code divides by
    # 1 - sqrt(offset) instead, which scales every ᾱ by 1/0.99.
    def alpha_bar(n):
        closed = 1.0 - torch.sqrt(n / n_steps + offset)
        return torch.where(n == 0, torch.ones_like(closed), closed)

    return _betas_from_alpha_bar_fn(alpha_bar, n_steps, max_beta, min_beta)


def _exp(n_steps, beta_min=0.1, beta_max=10.0):
    # Exact integration of β(s) over [(i-1)/T, i/T] would use x_i = 2i - 1; DreamRec's code uses
    # linspace(1, 2T + 1, T), slightly steeper, and we keep it so its hyperparameters carry over.
    x = torch.linspace(1.0, 2.0 * n_steps + 1.0, n_steps, dtype=torch.float64)
    return 1.0 - torch.exp(-beta_min / n_steps - x * 0.5 * (beta_max - beta_min) / n_steps**2)


_BUILDERS = {"linear": _linear, "cosine": _cosine, "sqrt": _sqrt, "exp": _exp}


def make_betas(schedule, n_steps, **kwargs):
    """Return β_1..β_N (float64, shape [n_steps]) of the named schedule.

    Args:
        schedule: one of :data:`SCHEDULES` (the ``noise_schedule`` option of the models).
        n_steps: N, the number of diffusion steps (the ``n_diffusion_steps`` option).
        **kwargs: overrides of the schedule's constants: ``beta_start``/``beta_end`` (linear),
            ``s``/``max_beta``/``min_beta`` (cosine), ``offset``/``max_beta``/``min_beta`` (sqrt),
            ``beta_min``/``beta_max`` (exp, the SDE's β(0) and β(1)).

    Raises:
        ValueError: unknown schedule, N < 1, or constants that give a β outside (0, 1).
    """
    if schedule not in _BUILDERS:
        raise ValueError(
            f"noise_schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}"
        )
    try:
        n_steps = operator.index(n_steps)
    except TypeError:
        n_steps_ok = False
    else:
        n_steps_ok = n_steps >= 1
    if not n_steps_ok:
        raise ValueError(
            f"n_diffusion_steps (n_steps) must be a positive integer for noise_schedule "
            f"{schedule!r}; got {n_steps!r}"
        )
    betas = _BUILDERS[schedule](n_steps, **kwargs)
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(
            f"noise_schedule {schedule!r} with n_steps={n_steps} and {kwargs} gives betas outside "
            f"(0, 1): min {betas.min().item():.3g}, max {betas.max().item():.3g}"
        )
    return betas
