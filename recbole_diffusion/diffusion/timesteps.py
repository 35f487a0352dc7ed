"""Drawing the diffusion step of each training example: uniformly, or by importance.

- :func:`uniform_steps`: t ~ U{0, ..., N-1}, one per example (DreamRec's and ADARec's training,
  as their papers and code do);
- :class:`StepImportanceSampler`: p_n ∝ sqrt(E[L_n²]) over a per-step loss history, the
  "loss-second-moment" sampler of Nichol & Dhariwal (ICML 2021) that DiffRec (Du et al. Eq. 18)
  uses; with ``importance=False`` it records the history but draws uniformly.
"""

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def uniform_steps(n_steps, batch_size, device=None):
    """``batch_size`` 0-based step indices drawn uniformly from the global torch generator."""
    return torch.randint(0, n_steps, (batch_size,), device=device)


class StepImportanceSampler(nn.Module):
    r"""Importance sampling of the diffusion step, p_n ∝ sqrt(E[L_n²]) (Du et al. Eq. 18).

    Keeps the ``history_size`` most recent values of L_n for every step n (a ring buffer per
    step) as buffers, so that the history is part of the model's ``state_dict`` and survives a
    checkpoint and a resumed run. Until every step has a full history, steps are drawn
    uniformly (Nichol & Dhariwal, ICML 2021, whose "loss-second-moment" sampler Du et al.
    cite). Afterwards p_n = (1 - u) sqrt(mean(h_n²)) / Σ_m sqrt(mean(h_m²)) + u / N, where h_n is
    the history of step n and u = ``uniform_prob`` keeps every step reachable.

    Under torch.distributed, :meth:`record` gathers the values of all ranks first, so every
    rank keeps the same history (and draws from the same p_n with its own random numbers).

    Args:
        n_steps: N.
        history_size: values of L_n kept per step.
        uniform_prob: u, the uniform share mixed into p_n once the history is full.
        importance: False draws uniformly always (the history is still recorded).
    """

    def __init__(self, n_steps, history_size=10, uniform_prob=0.001, importance=True):
        super().__init__()
        self.n_steps = n_steps
        self.history_size = history_size
        self.uniform_prob = uniform_prob
        self.importance = importance
        self.register_buffer("loss_history", torch.zeros(n_steps, history_size))
        self.register_buffer("loss_count", torch.zeros(n_steps, dtype=torch.long))
        self.register_buffer("loss_next", torch.zeros(n_steps, dtype=torch.long))

    def extra_repr(self):
        return (
            f"n_steps={self.n_steps}, history_size={self.history_size}, "
            f"uniform_prob={self.uniform_prob}, importance={self.importance}"
        )

    def history_full(self):
        return bool((self.loss_count >= self.history_size).all())

    def probabilities(self):
        """p_n over the 0-based step indices (float64, on the buffers' device)."""
        uniform = torch.full((self.n_steps,), 1.0 / self.n_steps, dtype=torch.float64, device=self.loss_history.device)
        if not self.importance or not self.history_full():
            return uniform
        root_second_moment = self.loss_history.double().pow(2).mean(dim=1).sqrt()
        total = root_second_moment.sum()
        if not torch.isfinite(total) or total <= 0:
            return uniform
        return (1.0 - self.uniform_prob) * root_second_moment / total + self.uniform_prob * uniform

    def sample(self, batch_size, device=None):
        """Draw ``batch_size`` step indices; return them with the weights 1 / (N p_n).

        The weight makes E[w L_n] = (1/N) Σ_n L_n, the mean over steps, for any p_n (it is 1
        under uniform sampling).
        """
        probs = self.probabilities()
        steps = torch.multinomial(probs, batch_size, replacement=True)
        weights = 1.0 / (self.n_steps * probs[steps])
        device = device if device is not None else probs.device
        return steps.to(device), weights.to(device=device, dtype=torch.float32)

    @torch.no_grad()
    def record(self, steps, losses):
        """Append the observed L_n values (``losses`` [M]) of the steps ``steps`` [M]."""
        steps, losses = _gather_across_ranks(steps.detach().long(), losses.detach().float())
        if steps.numel() == 0:
            return
        steps = steps.to(self.loss_history.device)
        losses = losses.to(self.loss_history.device, self.loss_history.dtype)
        order = torch.argsort(steps, stable=True)
        steps, losses = steps[order], losses[order]
        unique, counts = torch.unique_consecutive(steps, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(steps.numel(), device=steps.device) - torch.repeat_interleave(starts, counts)
        total = torch.repeat_interleave(counts, counts)
        # when one step occurs more often than the history holds, only its latest values count
        dropped = (total - self.history_size).clamp(min=0)
        keep = rank >= dropped
        steps, losses, rank = steps[keep], losses[keep], (rank - dropped)[keep]
        position = (self.loss_next[steps] + rank) % self.history_size
        self.loss_history[steps, position] = losses
        written = counts.clamp(max=self.history_size)
        self.loss_next[unique] = (self.loss_next[unique] + written) % self.history_size
        self.loss_count[unique] = (self.loss_count[unique] + written).clamp(max=self.history_size)


def _gather_across_ranks(steps, losses):
    """All ranks' (steps, losses), concatenated in rank order; the inputs when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return steps, losses
    world = dist.get_world_size()
    size = torch.tensor([steps.numel()], device=steps.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    pad = longest - steps.numel()
    padded_steps = F.pad(steps, (0, pad))
    padded_losses = F.pad(losses, (0, pad))
    all_steps = [torch.zeros_like(padded_steps) for _ in range(world)]
    all_losses = [torch.zeros_like(padded_losses) for _ in range(world)]
    dist.all_gather(all_steps, padded_steps)
    dist.all_gather(all_losses, padded_losses)
    steps = torch.cat([s[: int(n.item())] for s, n in zip(all_steps, sizes)])
    losses = torch.cat([v[: int(n.item())] for v, n in zip(all_losses, sizes)])
    return steps, losses
