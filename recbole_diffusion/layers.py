"""Blocks shared by several models: one mechanism, used everywhere."""

import torch
import torch.nn.functional as F


def valid_positions(targets):
    """Boolean mask of the positions that carry a target (item id 0 is RecBole's padding)."""
    return targets > 0


def sequence_ce_loss(hidden, targets, item_weight, item_bias=None, reduction="mean"):
    """Full-softmax next-item cross-entropy at every non-padded position.

    ``hidden`` [B, L, d] holds the representation at each position, ``targets`` [B, L] the next
    item there (0 = padding), ``item_weight`` [n_items, d] the output item table. Only valid
    positions are scored, so padding costs nothing. ``reduction='mean'`` averages over targets,
    which is what RecBole's prefix-mode CE averages over.
    """
    mask = valid_positions(targets)
    logits = hidden[mask] @ item_weight.t()
    if item_bias is not None:
        logits = logits + item_bias
    return F.cross_entropy(logits, targets[mask], reduction=reduction)


def causal_padding_mask(item_seq):
    """[B, 1, L, L] additive mask: position i attends to j <= i, never to padding (id 0)."""
    length = item_seq.size(1)
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=item_seq.device))
    allowed = causal.unsqueeze(0) & (item_seq > 0).unsqueeze(1)
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=item_seq.device)
    return mask.masked_fill(~allowed, -10000.0).unsqueeze(1)
