"""Gaussian diffusion: forward noising, the DDPM posterior, ancestral and strided samplers.

STEP CONVENTION — READ THIS FIRST
    Every ``t`` in this module is a 0-based INDEX: an integer (tensor) in 0..N-1, and index ``t``
    means diffusion step ``t + 1`` of the papers. So ``alphas_cumprod[t]`` is ᾱ_{t+1},
    ``alphas_cumprod_prev[t]`` is ᾱ_t (with ᾱ_0 = 1), ``q_sample(x0, t)`` returns a draw of x_{t+1}
    and the reverse step at index ``t`` goes from x_{t+1} to x_t. Index 0 is the last reverse step
    (x_1 -> x_0), which adds no noise. Training draws ``t`` uniformly from 0..N-1 and gives the
    same index to the denoiser and the step embedding, as DreamRec's code does.

The math, written once for all models:
* forward process q(x_n | x_0) = N(sqrt(ᾱ_n) x_0, (1 - ᾱ_n) I) and the posterior
  q(x_{n-1} | x_n, x_0) = N(c1_n x_0 + c2_n x_n, β̃_n I) with c1_n = β_n sqrt(ᾱ_{n-1})/(1 - ᾱ_n),
  c2_n = sqrt(α_n)(1 - ᾱ_{n-1})/(1 - ᾱ_n), β̃_n = β_n (1 - ᾱ_{n-1})/(1 - ᾱ_n) (Ho et al., "Denoising
  Diffusion Probabilistic Models", NeurIPS 2020, Eq. 4, 6, 7);
* the x0-parameterised ancestral sampler of DreamRec (Yang et al., NeurIPS 2023, Algorithm 2) and
  of DiffRec (Du et al., "Sequential Recommendation with Diffusion Models", 2023, Algorithm 2):
  the network predicts x_0 and the step draws from the posterior at that prediction;
* strided sampling over S < N steps with the generalised update of Song et al., "Denoising
  Diffusion Implicit Models", ICLR 2021, Eq. 12 and 16: eta = 1 is the ancestral posterior of the
  respaced chain, eta = 0 the deterministic DDIM sampler;
* schedules from :mod:`recbole_diffusion.diffusion.schedules` (Nichol & Dhariwal, ICML 2021 for the
  cosine schedule).
"""

import operator

import torch
from torch import nn

from recbole_diffusion.diffusion.schedules import alphas_cumprod_from_betas, make_betas


def evaluation_generator(seed):
    """The noise source of one scoring call at evaluation: a CPU generator seeded with ``seed``.

    A fresh one per call (per evaluation batch) makes a user's noise depend only on its batch,
    not on the batches scored before it: the same in every evaluation, and the same whether one
    process scores every batch or several processes share them."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


# The evaluation-sampling options of the plugin's diffusion models (DiffRec, DreamRec), one name
# and one meaning each:
#   n_sample_steps  S, reverse steps per scoring call; ~ (or null / none / full) = the full chain
#   sample_eta      1: ancestral posterior steps, 0: deterministic DDIM (only S < N differs)
#   sample_seed     seed of evaluation_generator; ~ = the run's seed
RENAMED_SAMPLING_OPTIONS = {
    "inference": "renamed; use n_sample_steps (1: one step, the former one_step; ~: the full chain, the former full_chain)",
    "n_inference_draws": "renamed; use n_sample_draws",
    "inference_seed": "renamed; use sample_seed",
}


def sample_steps_option(value):
    """``n_sample_steps`` as configured: None (YAML ~, or the words null / none / full) means the full chain."""
    if isinstance(value, str) and value.strip().lower() in ("null", "none", "full", "~"):
        return None
    return value


def sampling_options(config):
    """(S or None, eta, seed) of ``config``'s sampling options (checked by :func:`check_sampling_options`)."""
    seed = config["sample_seed"]
    return sample_steps_option(config["n_sample_steps"]), float(config["sample_eta"]), config["seed"] if seed is None else seed


def check_sampling_options(checks, n_steps):
    """Check the sampling options with ``checks`` (an ``OptionChecks``) against ``n_steps`` diffusion
    steps; an option of an earlier name is refused with its new one."""
    checks.refuse_renamed(RENAMED_SAMPLING_OPTIONS)
    if sample_steps_option(checks.get("n_sample_steps")) is not None:
        checks.integer("n_sample_steps", 1, n_steps, note="sampling steps S <= n_diffusion_steps, or ~ for the full chain")
    checks.number("sample_eta", 0.0, 1.0, note="1: ancestral, 0: deterministic DDIM")
    if checks.get("sample_seed") is not None:
        checks.integer("sample_seed", 0, note="or ~ for the run's seed")


def _randn(shape, generator, device, dtype):
    # Draw on the generator's own device, then move: a CPU generator then gives the same numbers
    # whether the model runs on CPU or GPU, which keeps seeded evaluation comparable.
    # From a CPU generator to a GPU the draw goes through page-locked memory and is copied without
    # the host waiting for it: the reverse chain draws once per step, and the next step's draw then
    # overlaps the GPU's work on this one.
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    device = torch.device(device)
    if noise.device.type == "cpu" and device.type == "cuda":
        return noise.pin_memory().to(device, non_blocking=True)
    return noise.to(device)


class GaussianDiffusion(nn.Module):
    """DDPM quantities of one noise schedule, and the samplers built on them.

    Holds no parameters. The buffers (float32, computed in float64 then cast, each of shape [N],
    indexed by the 0-based step index ``t`` described in the module docstring) are: ``betas``,
    ``alphas_cumprod``, ``alphas_cumprod_prev``, ``sqrt_alphas_cumprod``,
    ``sqrt_one_minus_alphas_cumprod``, ``posterior_variance``, ``posterior_log_variance_clipped``,
    ``posterior_mean_coef1``, ``posterior_mean_coef2``. They are not persistent: they follow the
    module across devices but stay out of ``state_dict``, because they are derived from the
    configuration rather than learned, and a checkpoint should not pin them.

    Args:
        betas: β_1..β_N, each in (0, 1).
    """

    def __init__(self, betas):
        super().__init__()
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.dim() != 1 or betas.numel() < 1:
            raise ValueError(
                f"betas must be a non-empty 1-D sequence; got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        self.n_steps = betas.numel()

        alphas_cumprod = alphas_cumprod_from_betas(betas)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # β̃ at index 0 is exactly 0, and its log is -inf; like DDPM we substitute the next value
        # (or β_1 when N = 1) so that the log variance stays finite for losses that use it.
        first = posterior_variance[1:2] if self.n_steps > 1 else betas[:1]
        log_variance_clipped = torch.log(torch.cat([first, posterior_variance[1:]]))
        # Kept in float64 for the strided sampler, whose per-step coefficients are scalars: a
        # difference like 1 - ᾱ_prev - σ² loses most of its digits in float32 late in the chain.
        self._alphas_cumprod_f64 = alphas_cumprod

        buffers = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": log_variance_clipped,
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * (1.0 - betas).sqrt()
            / (1.0 - alphas_cumprod),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    @classmethod
    def from_schedule(cls, schedule, n_steps, **kwargs):
        """Build from a named schedule (see :func:`.schedules.make_betas` for ``kwargs``)."""
        return cls(make_betas(schedule, n_steps, **kwargs))

    def extra_repr(self):
        return f"n_steps={self.n_steps}"

    @staticmethod
    def _extract(buffer, t, x):
        """buffer[t] shaped to broadcast against x: [B, 1, ..., 1] for [B] indices, 0-d for one."""
        t = torch.as_tensor(t, dtype=torch.long, device=buffer.device)
        values = buffer[t].to(device=x.device, dtype=x.dtype)
        if values.dim() == 0:
            return values
        return values.reshape(values.shape[0], *([1] * (x.dim() - 1)))

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x0, t, noise=None, generator=None):
        """Draw x_{t+1} ~ q(· | x_0): sqrt(ᾱ) x0 + sqrt(1 - ᾱ) ε.

        Args:
            x0: clean data [B, ...].
            t: step indices [B] (or a 0-d index for the whole batch), values 0..N-1.
            noise: ε, same shape as x0; drawn from ``generator`` when None.
        """
        if noise is None:
            noise = _randn(x0.shape, generator, x0.device, x0.dtype)
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior(self, x0, x_t, t):
        """Mean, variance and clipped log variance of q(x_t' | x_t, x_0), t' the step before t.

        ``variance`` and ``log_variance`` are shaped to broadcast against ``x_t``.
        """
        mean = (
            self._extract(self.posterior_mean_coef1, t, x_t) * x0
            + self._extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = self._extract(self.posterior_variance, t, x_t)
        log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    def predict_eps_from_x0(self, x_t, t, x0):
        """The ε that maps x0 to x_t at index t: (x_t - sqrt(ᾱ) x0) / sqrt(1 - ᾱ)."""
        signal = self._extract(self.sqrt_alphas_cumprod, t, x_t) * x0
        return (x_t - signal) / self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_t)

    def predict_x0_from_eps(self, x_t, t, eps):
        """Inverse of :meth:`predict_eps_from_x0`, for ε-parameterised denoisers."""
        noise_part = self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps
        return (x_t - noise_part) / self._extract(self.sqrt_alphas_cumprod, t, x_t)

    # ------------------------------------------------------------------ reverse steps
    def p_sample_x0(self, x0_pred, x_t, t, noise=None, generator=None):
        """One ancestral step x_{t+1} -> x_t: a draw from the DDPM posterior at the predicted x0.

        ``t`` may differ per sample ([B]); samples at index 0 get no noise, so the chain ends on
        the posterior mean, which at index 0 is x0_pred itself.
        """
        mean, variance, _ = self.q_posterior(x0_pred, x_t, t)
        if noise is None:
            noise = _randn(x_t.shape, generator, x_t.device, x_t.dtype)
        t = torch.as_tensor(t, dtype=torch.long, device=x_t.device)
        # Masked explicitly although β̃ is 0 at index 0: float32 rounding could leave a tiny value.
        nonzero = (t != 0).to(x_t.dtype)
        if nonzero.dim() > 0:
            nonzero = nonzero.reshape(nonzero.shape[0], *([1] * (x_t.dim() - 1)))
        return mean + nonzero * variance.sqrt() * noise

    def ddim_step(self, x0_pred, x_t, t, t_prev, eta=0.0, noise=None, generator=None):
        """Generalised DDIM step from index ``t`` to index ``t_prev`` < t (-1 means x_0).

        x_prev = sqrt(ᾱ_prev) x0 + sqrt(1 - ᾱ_prev - σ²) ε̂ + σ z with
        σ² = eta² (1 - ᾱ_prev)/(1 - ᾱ_t) (1 - ᾱ_t/ᾱ_prev) (Song et al. 2021, Eq. 12 and 16),
        where ε̂ is the noise implied by x0_pred. ``t`` and ``t_prev`` are Python ints, shared by
        the whole batch.
        """
        t, t_prev = operator.index(t), operator.index(t_prev)
        if not -1 <= t_prev < t < self.n_steps:
            raise ValueError(f"need -1 <= t_prev < t < {self.n_steps}; got t={t}, t_prev={t_prev}")
        alpha_bar = self._alphas_cumprod_f64[t].item()
        alpha_bar_prev = 1.0 if t_prev < 0 else self._alphas_cumprod_f64[t_prev].item()
        sigma_sq = (
            eta**2 * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)
        )
        direction = max(1.0 - alpha_bar_prev - sigma_sq, 0.0) ** 0.5
        eps = (x_t - alpha_bar**0.5 * x0_pred) / (1.0 - alpha_bar) ** 0.5
        x_prev = alpha_bar_prev**0.5 * x0_pred + direction * eps
        if sigma_sq > 0:
            if noise is None:
                noise = _randn(x_t.shape, generator, x_t.device, x_t.dtype)
            x_prev = x_prev + sigma_sq**0.5 * noise
        return x_prev

    # ------------------------------------------------------------------ samplers
    def strided_timesteps(self, n_sample_steps=None):
        """Descending step indices (CPU long tensor) visited by :meth:`sample`.

        S evenly spaced indices from N-1 down to 0, both included (S = 1: only N-1, i.e. one jump
        from pure noise to the predicted x0, as in DiffRec's Algorithm 3). None means S = N.
        """
        if n_sample_steps is None:
            n_sample_steps = self.n_steps
        try:
            n_sample_steps = operator.index(n_sample_steps)
        except TypeError:
            raise ValueError(
                f"n_sample_steps must be an integer in 1..{self.n_steps}; got {n_sample_steps!r}"
            ) from None
        if not 1 <= n_sample_steps <= self.n_steps:
            raise ValueError(
                f"n_sample_steps must be in 1..{self.n_steps} (the number of diffusion steps); "
                f"got {n_sample_steps}"
            )
        if n_sample_steps == 1:
            return torch.tensor([self.n_steps - 1], dtype=torch.long)
        # Spacing (N-1)/(S-1) >= 1 makes the rounded indices distinct.
        steps = torch.linspace(0, self.n_steps - 1, n_sample_steps, dtype=torch.float64)
        steps = steps.round().long()
        return steps.flip(0)

    def sample(
        self,
        x0_fn,
        shape=None,
        n_sample_steps=None,
        eta=1.0,
        generator=None,
        x_T=None,
        device=None,
        dtype=torch.float32,
        return_trajectory=False,
    ):
        """Run the reverse chain from x_T ~ N(0, I) and return the final x_0.

        Args:
            x0_fn: callable ``(x_t, t) -> x0_pred`` with ``t`` a long tensor [B] of step indices
                (all equal); the denoiser, with any guidance already mixed in.
            shape: shape of x_T, [B, ...]; may be omitted when ``x_T`` is given.
            n_sample_steps: S. None or N: the full chain N -> 1. S < N: the S steps of
                :meth:`strided_timesteps`.
            eta: 1 draws from the posterior of the (respaced) chain, 0 is deterministic DDIM.
                Unit steps with eta = 1 use :meth:`p_sample_x0` (the papers' formula); every other
                step uses :meth:`ddim_step`. Both draw one noise tensor per step except the last,
                in the same order, so S = N reproduces the full chain for the same generator.
            generator: torch.Generator for x_T and the step noise; seeded, it makes sampling
                reproducible.
            x_T: start here instead of drawing it.
            device, dtype: of x_T when it is drawn (default device: the buffers').
            return_trajectory: also return the list [x_T, ..., x_0] of visited states.
        """
        timesteps = self.strided_timesteps(n_sample_steps).tolist()
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1]; got {eta}")
        if x_T is None:
            if shape is None:
                raise ValueError("sample needs either shape or x_T")
            device = self.betas.device if device is None else device
            x = _randn(tuple(shape), generator, device, dtype)
        else:
            if shape is not None and tuple(shape) != tuple(x_T.shape):
                raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}")
            x = x_T
        trajectory = [x] if return_trajectory else None

        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            x0_pred = x0_fn(x, t_batch)
            noise = None if t_prev < 0 else _randn(x.shape, generator, x.device, x.dtype)
            if t_prev == t - 1 and eta == 1.0:
                if noise is None:
                    noise = torch.zeros_like(x)
                x = self.p_sample_x0(x0_pred, x, t_batch, noise=noise)
            else:
                x = self.ddim_step(x0_pred, x, t, t_prev, eta=eta, noise=noise)
            if return_trajectory:
                trajectory.append(x)
        return (x, trajectory) if return_trajectory else x
