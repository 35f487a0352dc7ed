r"""ADARec
################################################

Reference:
    Xiaoxi Cui, Chao Zhao, Yurong Cheng and Xiangmin Zhou. "De-collapsing User Intent: Adaptive
    Diffusion Augmentation with Mixture-of-Experts for Sequential Recommendation." In AAAI 2026.

This is the method of the paper's framework figure; ``ADARecReleased`` is the authors' released
code, which differs from it. Design notes and measurements: ``docs/models/ADARec.md``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_diffusion.diffusion import SinusoidalStepEmbedding, uniform_steps
from recbole_diffusion.layers import SoftmaxGate, weighted_pool
from recbole_diffusion.model.adarec_blocks import ADARecBase, DepthController, SequenceEncoder

__all__ = ["ADARec"]

FINE, COARSE = 0, 1  # expert indices of the mixture


class ADARec(ADARecBase):
    r"""ADARec augments each sequence representation by a diffusion trajectory of adaptive depth.

    A SASRec encoder gives h = x_0; a depth controller (GRU, FC, Gumbel-Softmax) picks a depth T_u
    per sequence; x_0 is noised to T_u and a denoiser D_θ runs the reverse chain; a router sends
    the trajectory to a fine and a coarse expert, a gate mixes them into z, and r = h + z is
    scored against the item embeddings. Losses: L_rec + L_deno + L_expl + L_cont (+ clustering).

    NOTE: The figure leaves open: x_0 is the encoder output; D_θ is an MLP over [x_t; sinusoid(t)]
        predicting x_0; the controller reads detached states and a prefix-length embedding, so
        every prefix gets one depth (the same in prefix and sequence training).
    NOTE: Σ-pooling is normalised by the routed mass, the router also sees the level k, and r
        keeps h as a residual; evaluation runs the trajectory without noise (deterministic).
    NOTE: L_rec is the full-softmax CE (``rec_loss: bce``: the released one-negative BCE); L_cont
        classifies the coarse expert's output among unit prototypes against the query's nearest.
    """

    LOSS_WEIGHTS = {"deno": "deno_weight", "expl": "expl_weight", "cont": "cont_weight", "cluster": "cluster_weight"}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # hyperparameters
        self.max_depth = config["max_depth"]
        self.gumbel_temperature = config["gumbel_temperature"]
        self.use_denoiser = config["use_denoiser"] and self.use_augmentation
        self.use_router = config["use_router"]
        self.use_gate = config["use_gate"]

        # define layers
        d = self.hidden_size
        self.encoder = SequenceEncoder(self.n_items, self.max_seq_length, config)
        self.item_embedding = self.encoder.item_embedding
        if self.use_augmentation:
            self.controller = DepthController(d, self.max_depth, self.max_seq_length, True) if self.use_depth_controller else None
            self.step_embedding = SinusoidalStepEmbedding(d)
            self.denoiser = nn.Sequential(nn.Linear(2 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)) if self.use_denoiser else None
            self.router = SoftmaxGate(2 * d, 2) if self.use_router else None
            self.moe_experts = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d)) for _ in (FINE, COARSE))
            self.gate = SoftmaxGate(d, 2) if self.use_gate else None
        self.prototypes = nn.Parameter(torch.randn(self.n_prototypes, d)) if self.n_prototypes else None

        # parameters initialization
        self.initialise()

    @classmethod
    def check_config(cls, config):
        """Fail at start, naming the option, for settings ADARec cannot run with."""
        checks, n_steps = super().check_config(config)
        checks.integer("max_depth", 1, n_steps, note="the deepest augmentation depth T_max, at most n_diffusion_steps")
        checks.number("gumbel_temperature", 0.0, low_open=True)
        for key in ("use_denoiser", "use_router", "use_gate"):
            checks.boolean(key)
        return checks, n_steps

    # ------------------------------------------------------------------ the figure's blocks
    def _noise(self, reference):
        # evaluation runs the trajectory without noise (deterministic scores)
        return torch.randn_like(reference) if self.training else torch.zeros_like(reference)

    def choose_depth(self, logits):
        """One-hot depth choice y [N, T_max]: straight-through hard Gumbel-Softmax in training, argmax
        at evaluation. The depth is ``y.argmax(-1) + 1``."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.gumbel_temperature, hard=True)
        return F.one_hot(logits.argmax(dim=-1), self.max_depth).to(logits.dtype)

    def denoise(self, x_t, t):
        """D_θ(x_t, t): the predicted x_0, [N, d]; ``t`` holds 0-based step indices [N]."""
        return self.denoiser(torch.cat([x_t, self.step_embedding(t).to(x_t.dtype)], dim=-1))

    def trajectory(self, x0, depth):
        """States x̂_0..x̂_{T_max-1} [N, T_max, d] of the reverse chain from x_{T_u}, T_u = ``depth`` [N].

        Slot k < T_u holds x̂_k (x̂_0 last); slots k >= T_u hold the start x_{T_u}, masked to zero
        weight (they only shape the straight-through gradient). Without the denoiser, slot k holds
        the forward-noised x_k (x_0 itself at k = 0), one ε for all k.
        """
        noise = self._noise(x0)
        if not self.use_denoiser:
            states = [x0] + [self.diffusion.q_sample(x0, k - 1, noise=noise) for k in range(1, self.max_depth)]
            return torch.stack(states, dim=1)
        x = self.diffusion.q_sample(x0, depth - 1, noise=noise)
        states = [None] * self.max_depth
        for k in reversed(range(self.max_depth)):
            active = (k < depth).unsqueeze(-1)
            if bool(active.any()):
                t = torch.full_like(depth, k)
                stepped = self.diffusion.p_sample_x0(self.denoise(x, t), x, t, noise=self._noise(x))
                x = torch.where(active, stepped, x)
            states[k] = x
        return torch.stack(states, dim=1)

    def augment(self, h, logits):
        """Blocks 2-4 for representations ``h`` [N, d] with controller ``logits`` [N, T_max] (None:
        no controller, depth T_max). Returns a dict with the prediction ``output`` (h + z) and the
        intermediate ``depth``, ``mask``, ``states``, ``router``, ``gate``, ``experts`` ([N, 2, d])."""
        n = h.shape[0]
        if logits is None:
            mask = h.new_ones(n, self.max_depth)
        else:
            choice = self.choose_depth(logits)
            mask = choice.flip(-1).cumsum(-1).flip(-1)  # slot k valid iff k < T_u, straight-through
        depth = (mask.detach() > 0.5).sum(-1)
        states = self.trajectory(h, depth)
        levels = self.step_embedding(torch.arange(self.max_depth, device=h.device)).to(h.dtype)
        if self.router is not None:
            router = self.router(torch.cat([states, levels.expand(n, -1, -1)], dim=-1))
        else:
            router = h.new_full((n, self.max_depth, 2), 0.5)
        pooled = weighted_pool(states, router, mask)
        experts = torch.stack([expert(pooled[:, e]) for e, expert in enumerate(self.moe_experts)], dim=1)
        gate = self.gate(h) if self.gate is not None else h.new_full((n, 2), 0.5)
        output = h + (gate.unsqueeze(-1) * experts).sum(1)
        return {"output": output, "depth": depth, "mask": mask, "states": states, "router": router,
                "gate": gate, "experts": experts}

    def paper_forward(self, item_seq, positions):
        """Representations at the (batch row, position) pairs ``positions`` (a [B, L] bool mask);
        returns (h [N, d], controller logits [N, T_max] or None, augment dict or None)."""
        hidden = self.encoder(item_seq)
        h = hidden[positions]
        if not self.use_augmentation:
            return h, None, None
        logits = self.controller(hidden)[positions] if self.controller is not None else None
        return h, logits, self.augment(h, logits)

    # ------------------------------------------------------------------ training
    def loss_terms(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        targets = self.targets(interaction)
        valid = targets > 0
        h, logits, parts = self.paper_forward(item_seq, valid)
        output = h if parts is None else parts["output"]
        weight = self.item_embedding.weight
        negatives = self.draw_negatives(item_seq, targets)
        terms = {"rec": self.rec_loss_of(output, targets[valid], None if negatives is None else negatives[valid], weight)}
        if self.use_denoiser and self.loss_weights["deno"] > 0:
            x0 = h.detach()
            t = uniform_steps(self.max_depth, x0.shape[0], x0.device)
            x_t = self.diffusion.q_sample(x0, t, noise=torch.randn_like(x0))
            terms["deno"] = (self.denoise(x_t, t) - x0).pow(2).sum(-1).mean()
        if logits is not None and self.loss_weights["expl"] > 0:
            terms["expl"] = self.exploration_loss(logits)
        if self.prototypes is not None:
            self.renormalise(self.prototypes)
            query, intent = self.intent_queries(h, self.prototypes)
            if self.loss_weights["cont"] > 0:
                coarse = h if parts is None else parts["experts"][:, COARSE]
                similarity = F.normalize(coarse, dim=-1) @ self.prototypes.t() / self.cl_temperature
                terms["cont"] = F.cross_entropy(similarity, intent)
            if self.loss_weights["cluster"] > 0:
                terms["cluster"] = self.cluster_regulariser(query, self.prototypes)
        return terms

    # ------------------------------------------------------------------ scoring
    def forward(self, item_seq, item_seq_len):
        """The prediction representation r [B, d] at each row's last real position."""
        h, _, parts = self.paper_forward(item_seq, self.last_positions(item_seq, item_seq_len))
        return h if parts is None else parts["output"]

    def predict(self, interaction):
        representation = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (representation * self.item_embedding(interaction[self.ITEM_ID])).sum(-1)

    def full_sort_predict(self, interaction):
        representation = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return representation @ self.item_embedding.weight.t()
