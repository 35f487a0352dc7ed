r"""ADARec: adaptive diffusion augmentation with a mixture of experts for sequential recommendation.

Reference:
    Xiaoxi Cui, Chao Zhao, Yurong Cheng and Xiangmin Zhou. "De-collapsing User Intent: Adaptive
    Diffusion Augmentation with Mixture-of-Experts for Sequential Recommendation." AAAI 2026
    (Proceedings of the AAAI Conference on Artificial Intelligence 40(17), 14630-14638).

Only the abstract and the framework figure of the paper are available; the authors' released code
(ZhaoChao52/ADARec, commit 90faad2) differs from the figure. One class runs either
(``adarec_mode``):

* ``paper`` (default), the figure: a SASRec encoder gives the sequence representation x_0; an
  adaptive depth controller (GRU over the states and a length embedding, FC, Gumbel-Softmax)
  picks a depth T_u per sequence; x_0 is noised to step T_u and a shared denoiser D_θ runs the
  reverse chain; the reverse trajectory x̂_{T_u-1..0} is parsed by a router into a fine- and a
  coarse-grained expert, a gate mixes the two; losses L_rec, L_deno, L_expl, L_cont.
* ``released``, the authors' code with its bugs fixed: independent SASRec experts, each mixing
  forward-noised copies of its input embeddings at a few fixed depths by a softmax controller;
  BCE with one negative on the clean and the noised path, L_deno, L_expl, CL4SRec instance
  contrast, intent-prototype contrast and ELCRec's clustering regulariser; at test the experts'
  scores are averaged.
"""

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.data.sequence import target_field
from recbole_diffusion.diffusion import SCHEDULES, GaussianDiffusion, SinusoidalStepEmbedding, make_betas, uniform_steps
from recbole_diffusion.layers import (
    SoftmaxGate,
    causal_padding_mask,
    full_softmax_ce,
    info_nce,
    random_sequence_views,
    sample_negative_items,
    weighted_pool,
)
from recbole_diffusion.errors import ConfigError, OptionChecks

__all__ = ["ADARec"]

MODES = ("paper", "released")
REC_LOSSES = ("ce", "bce")
FINE, COARSE = 0, 1  # expert indices of the paper-mode mixture


class SequenceEncoder(nn.Module):
    """SASRec's encoder: item + learned position embedding, LayerNorm, dropout, post-LN Transformer."""

    def __init__(self, n_items, max_length, config):
        super().__init__()
        hidden = config["hidden_size"]
        self.item_embedding = nn.Embedding(n_items, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_length, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.trm_encoder = TransformerEncoder(
            n_layers=config["n_layers"],
            n_heads=config["n_heads"],
            hidden_size=hidden,
            inner_size=config["inner_size"],
            hidden_dropout_prob=config["hidden_dropout_prob"],
            attn_dropout_prob=config["attn_dropout_prob"],
            hidden_act=config["hidden_act"],
            layer_norm_eps=config["layer_norm_eps"],
        )

    def embed(self, item_seq):
        """E_0 [B, L, d]: the encoder's input."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        return self.dropout(self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions)))

    def encode(self, embedded, item_seq):
        """Causal encoder output at every position, [B, L, d]."""
        return self.trm_encoder(embedded, causal_padding_mask(item_seq), output_all_encoded_layers=True)[-1]

    def forward(self, item_seq):
        return self.encode(self.embed(item_seq), item_seq)


class DepthController(nn.Module):
    """Adaptive depth controller: logits over ``n_depths`` depths at every prefix, [B, L, n_depths].

    A GRU reads the (detached) states and a learned embedding of the prefix length (j + 1 at
    position j), then a linear layer gives the logits. ``length_before_gru`` concatenates the
    length embedding to the GRU's input (the paper's figure); otherwise to its output (the
    released code). Being causal, position j's logits depend on the prefix up to j only.
    """

    def __init__(self, hidden_size, n_depths, max_length, length_before_gru):
        super().__init__()
        self.length_before_gru = length_before_gru
        self.length_embedding = nn.Embedding(max_length + 1, hidden_size)
        gru_input = 2 * hidden_size if length_before_gru else hidden_size
        self.gru = nn.GRU(gru_input, hidden_size, batch_first=True)
        fc_input = hidden_size if length_before_gru else 2 * hidden_size
        self.fc = nn.Linear(fc_input, n_depths)

    def forward(self, states):
        states = states.detach()
        lengths = torch.arange(1, states.size(1) + 1, device=states.device)
        length_emb = self.length_embedding(lengths).expand(states.size(0), -1, -1)
        if self.length_before_gru:
            output, _ = self.gru(torch.cat([states, length_emb], dim=-1))
            return self.fc(output)
        output, _ = self.gru(states)
        return self.fc(torch.cat([output, length_emb], dim=-1))


class ReleasedExpert(nn.Module):
    """One expert of the released code: a SASRec model, its controller over ``depths`` and intents."""

    def __init__(self, n_items, max_length, config, depths, use_controller, n_prototypes):
        super().__init__()
        hidden = config["hidden_size"]
        self.register_buffer("depth_index", torch.tensor([d - 1 for d in depths]), persistent=False)
        self.encoder = SequenceEncoder(n_items, max_length, config)
        self.controller = DepthController(hidden, len(depths), max_length, False) if use_controller else None
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, hidden)) if n_prototypes else None


class ADARec(SequentialRecommender):
    r"""ADARec (Cui et al., AAAI 2026) on RecBole's sequential pipeline, two modes.

    Paper mode (``adarec_mode: paper``), per sequence (every prefix is one: in
    ``train_mode: sequence`` each position of a window is the prefix ending there):

    1. h = SASRec encoder output at the prefix's last position; x_0 = h.
    2. Controller: GRU over [sg(h_j); e_len(j+1)] -> FC -> logits over depths 1..``max_depth``
       (T_max); training draws a hard straight-through Gumbel-Softmax sample y (temperature
       ``gumbel_temperature``), evaluation takes the argmax. T_u = argmax(y) + 1.
    3. Trajectory: x_{T_u} = q_sample(x_0, T_u) then, for steps T_u..1, x̂_0-prediction
       D_θ(x_t, t) and the shared DDPM posterior step give x̂_{T_u-1}, ..., x̂_0. Slot k of
       A_u [T_max, d] holds x̂_k; the mask m_k = Σ_{j >= k} y_j (1 for k < T_u) hides the rest and
       carries the straight-through gradient to the controller.
    4. MoE: a router softmax([x̂_k; emb(k)]) sends each state to the fine and the coarse expert;
       each expert Σ-pools what it receives (normalised by its routed mass) and applies an MLP;
       a gate softmax(W h) mixes the two: z = Σ_e g_e o_e. The prediction is r = h + z, scored
       against the (tied) item embeddings.
    5. Losses: L_rec = CE over all items (``rec_loss``); L_deno = ‖D_θ(x_t, t) - sg(x_0)‖² with
       t ~ U{1..T_max} (``deno_weight``); L_expl = -entropy of the controller (``expl_weight``);
       L_cont = prototype contrast of the coarse expert's output (``cont_weight``) plus the
       clustering regulariser (``cluster_weight``).

    Released mode (``adarec_mode: released``): one ``ReleasedExpert`` per entry of
    ``released_depths`` ([[4, 5], [9, 10]]); per expert E_0 = embedding, H = Enc(E_0); training adds
    E_mix = Σ_k p_k q_sample(E_0, D_k) (p = softmax of the controller over the expert's depths, one
    p per sequence, fresh noise per depth) and H' = Enc(E_mix) with the same encoder; loss =
    BCE(H) + ``noised_rec_weight``·BCE(H') + ``deno_weight``·‖H' - sg(H)‖² + ``expl_weight``·(-entropy)
    + ``instance_cl_weight``·NCE(two views) + ``cont_weight``·intent NCE + ``cluster_weight``·L_clu,
    summed over experts. Scores = the mean of the experts' scores.

    NOTE: Paper mode, choices where the figure is silent: x_0 is the encoder output at the
        prefix's last position (a representation, not an item embedding); D_θ is one MLP
        Linear(2d, 2d) -> GELU -> Linear(2d, d) over [x_t; sinusoid(t)] predicting x_0, not
        conditioned on the history; the trajectory uses the shared GaussianDiffusion (``q_sample``,
        ``p_sample_x0``) of ``noise_schedule`` over ``n_diffusion_steps`` (default: the released
        linear 1e-4..0.02 schedule over 50 steps, T_max = 10 as the released deepest level).
    NOTE: Paper mode: the controller reads detached encoder states (as the released controller
        reads detached embeddings), so L_expl and the depth choice do not shape the encoder; the
        length embedding is concatenated before the GRU (figure order) and indexed by the prefix
        length, which makes the controller causal: every prefix gets one depth, the same in
        prefix and sequence training. Lengths count at most ``MAX_ITEM_LIST_LENGTH`` items
        (the released code uses the untruncated history length).
    NOTE: Paper mode: trajectory slots k >= T_u hold the starting state x_{T_u} (masked to zero
        weight); they only shape the straight-through gradient of the mask. Evaluation runs the
        trajectory without noise (x_{T_u} = sqrt(ᾱ) x_0 and posterior means): deterministic scores.
    NOTE: Paper mode: "Σ pooling" is a routed-weight sum normalised by the routed mass (a convex
        combination), so an expert's input does not scale with T_u; the router also sees the
        level k (the sinusoid of k), the gate reads the clean representation h, and the
        prediction keeps h as a residual (r = h + z).
    NOTE: Paper mode, L_cont: the query sg(normalise(h)) picks its nearest prototype (K =
        ``n_prototypes`` unit vectors, initialised at random and re-normalised before every step,
        the released practice, where the released code left them uninitialised); the coarse
        expert's normalised output is classified among the prototypes (softmax over K, temperature
        ``cl_temperature``) with that prototype as the target; ELCRec's clustering regulariser
        (``cluster_weight``) also trains the prototypes. ``use_augmentation: False`` (no
        controller, diffusion or MoE) applies L_cont to h.
    NOTE: Paper mode, L_rec is the full-softmax CE at every target (``rec_loss: ~`` = ce; the figure
        names no form; the released BCE with one negative is ``rec_loss: bce``).
    NOTE: Paper mode, L_expl = -mean entropy of softmax(controller logits), the released loss (an
        exploration bonus); no depth cost is added.
    NOTE: Released mode follows the released code with its bugs fixed (its cluster prototypes
        are initialised here). Deviations: the experts share one optimiser and one early stopping on the
        fused score (RecBole's trainer; Adam is per-parameter, so only the stopping changes); the
        controller is per window in sequence training (as released: it reads the whole input
        sequence); the two views are encoded once and serve both contrastive losses (the
        released code encodes them twice with fresh noise), in one encoder call with the batch's
        clean and noised paths; a view's instance representation is
        its output at its last real position and its intent representation the mean over its
        real positions (the released code flattens / averages all 50 left-padded positions);
        negatives for BCE are uniform items outside the batch row's items (the released code
        excludes the user's whole sequence). In sequence training a batch holds fewer windows
        (``train_batch_size`` counts targets), so the contrastive losses see fewer negatives.
    NOTE: Ablation switches: ``use_augmentation`` (both modes; off: no noised path / trajectory,
        no controller, no MoE), ``use_depth_controller`` (off: paper mode uses T_max for every
        sequence, released mode mixes its depths equally), ``use_denoiser`` (paper; off: the
        trajectory is the forward-noised states q(x_k | x_0), one shared ε, no D_θ, no L_deno),
        ``use_router`` (paper; off: each state goes half to each expert), ``use_gate`` (paper;
        off: equal mix); a loss weight of 0 removes that loss (and the prototypes when both
        ``cont_weight`` and ``cluster_weight`` are 0). Switched-off components build no
        parameters.
    NOTE: Evaluation is RecBole's full ranking without masking history items (the released code
        zeroes history scores); the numbers this plugin reports use RecBole's protocol.
    """

    input_type = InputType.POINTWISE
    # outputs read only the causal prefix up to item_length - 1: full-sort evaluation may trim padding
    TRIM_EVAL_PADDING = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # hyperparameters
        self.mode = config["adarec_mode"]
        self.hidden_size = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.n_diffusion_steps = config["n_diffusion_steps"]
        self.noise_schedule = config["noise_schedule"]
        self.max_depth = config["max_depth"]
        self.released_depths = [list(depths) for depths in config["released_depths"]]
        self.gumbel_temperature = config["gumbel_temperature"]
        self.use_augmentation = config["use_augmentation"]
        self.use_depth_controller = config["use_depth_controller"] and self.use_augmentation
        self.use_denoiser = config["use_denoiser"] and self.use_augmentation
        self.use_router = config["use_router"]
        self.use_gate = config["use_gate"]
        self.rec_loss = config["rec_loss"] or ("ce" if self.mode == "paper" else "bce")
        self.loss_weights = {
            "rec": 1.0,
            "rec_noised": config["noised_rec_weight"] if self.mode == "released" else 0.0,
            "deno": config["deno_weight"],
            "expl": config["expl_weight"],
            "instance": config["instance_cl_weight"] if self.mode == "released" else 0.0,
            "cont": config["cont_weight"],
            "cluster": config["cluster_weight"],
        }
        self.n_prototypes = config["n_prototypes"] if self.loss_weights["cont"] or self.loss_weights["cluster"] else 0
        self.cl_temperature = config["cl_temperature"]
        self.view_ratios = (config["crop_ratio"], config["mask_ratio"], config["reorder_ratio"])
        self.TARGET_SEQ = target_field(config)

        # layers
        d = self.hidden_size
        self.diffusion = GaussianDiffusion.from_schedule(self.noise_schedule, self.n_diffusion_steps)
        if self.mode == "paper":
            self.encoder = SequenceEncoder(self.n_items, self.max_seq_length, config)
            self.item_embedding = self.encoder.item_embedding
            if self.use_augmentation:
                self.controller = (
                    DepthController(d, self.max_depth, self.max_seq_length, True) if self.use_depth_controller else None
                )
                self.step_embedding = SinusoidalStepEmbedding(d)
                self.denoiser = (
                    nn.Sequential(nn.Linear(2 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)) if self.use_denoiser else None
                )
                self.router = SoftmaxGate(2 * d, 2) if self.use_router else None
                self.moe_experts = nn.ModuleList(
                    nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d)) for _ in (FINE, COARSE)
                )
                self.gate = SoftmaxGate(d, 2) if self.use_gate else None
            self.prototypes = nn.Parameter(torch.randn(self.n_prototypes, d)) if self.n_prototypes else None
        else:
            self.experts = nn.ModuleList(
                ReleasedExpert(
                    self.n_items, self.max_seq_length, config, depths, self.use_depth_controller, self.n_prototypes
                )
                for depths in self.released_depths
            )

        # initialisation (SASRec's; the prototypes become random unit vectors)
        self.apply(self._init_weights)
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name.endswith("prototypes"):
                    parameter.normal_().copy_(F.normalize(parameter, dim=-1))

    # SASRec's initialisation (normal(0, initializer_range) weights, zero biases, unit LayerNorm), as released
    _init_weights = SASRec._init_weights

    # ------------------------------------------------------------------ configuration
    @classmethod
    def check_config(cls, config):
        """Fail at start, naming the option, for settings ADARec cannot run with."""
        checks = OptionChecks(config)
        get, integer, number, choice = checks.get, checks.integer, checks.number, checks.choice

        choice("adarec_mode", MODES)
        n_steps = integer("n_diffusion_steps", 1)
        schedule = choice("noise_schedule", SCHEDULES)
        try:
            make_betas(schedule, n_steps)
        except ValueError as exc:
            raise ConfigError(f"noise_schedule: {exc}") from None
        depth = get("max_depth")
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= n_steps:
            raise ConfigError(
                f"max_depth: the deepest augmentation depth T_max must be an integer in 1..{n_steps} "
                f"(n_diffusion_steps, the schedule's length); got {depth!r}"
            )
        depths = get("released_depths")
        well_formed = isinstance(depths, (list, tuple)) and len(depths) >= 1 and all(
            isinstance(expert, (list, tuple)) and len(expert) >= 1 for expert in depths
        )
        if not well_formed or not all(
            isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= n_steps for expert in depths for d in expert
        ):
            raise ConfigError(
                f"released_depths: a list with one list of noise depths per expert, each depth an integer "
                f"in 1..{n_steps} (n_diffusion_steps), e.g. [[4, 5], [9, 10]]; got {depths!r}"
            )
        number("gumbel_temperature", 0.0, low_open=True)
        for key in ("use_augmentation", "use_depth_controller", "use_denoiser", "use_router", "use_gate"):
            if not isinstance(get(key), bool):
                raise ConfigError(f"{key}: must be True or False; got {get(key)!r}")
        if get("rec_loss") is not None:
            choice("rec_loss", REC_LOSSES)
        for key in (
            "noised_rec_weight", "deno_weight", "expl_weight", "instance_cl_weight", "cont_weight", "cluster_weight"
        ):
            number(key, 0.0)
        integer("n_prototypes", 1)
        number("cl_temperature", 0.0, low_open=True)
        number("crop_ratio", 0.0, 1.0, low_open=True)
        number("mask_ratio", 0.0, 1.0)
        number("reorder_ratio", 0.0, 1.0)
        checks.transformer()
        checks.no_negative_sampling("ADARec draws its own negatives (rec_loss: bce) or uses the full softmax (ce)")

    # ------------------------------------------------------------------ shared pieces
    def _targets(self, interaction):
        """Next item at every position, [B, L] (0 = none): a sequence batch's, or the prefix target
        at item_length - 1 for RecBole's prefix samples."""
        if self.TARGET_SEQ in interaction:
            return interaction[self.TARGET_SEQ]
        item_seq = interaction[self.ITEM_SEQ]
        targets = torch.zeros_like(item_seq)
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        targets[rows, interaction[self.ITEM_SEQ_LEN] - 1] = interaction[self.POS_ITEM_ID]
        return targets

    def _rec_loss(self, hidden, targets, negatives, item_weight):
        """L_rec over the valid positions: full-softmax CE or BCE with one negative per target."""
        valid = targets > 0
        if self.rec_loss == "ce":
            return full_softmax_ce(hidden[valid], item_weight, targets[valid])
        hidden = hidden[valid]
        positive = (hidden * item_weight[targets[valid]]).sum(-1)
        negative = (hidden * item_weight[negatives[valid]]).sum(-1)
        return -(F.logsigmoid(positive) + F.logsigmoid(-negative)).mean()

    def _draw_negatives(self, item_seq, targets):
        if self.rec_loss != "bce":
            return None
        return sample_negative_items(self.n_items, targets.shape, torch.cat([item_seq, targets], dim=1))

    @staticmethod
    def _exploration_loss(logits):
        """-entropy of softmax(logits), averaged: minimising it keeps the controller exploring."""
        log_probs = F.log_softmax(logits, dim=-1)
        return (log_probs.exp() * log_probs).sum(-1).mean()

    def _intent_queries(self, representation, prototypes):
        """Normalised detached queries and the index of each one's nearest prototype."""
        query = F.normalize(representation.detach(), dim=-1)
        return query, torch.cdist(query, prototypes).argmin(dim=-1)

    @staticmethod
    def _cluster_regulariser(query, prototypes):
        """ELCRec: mean squared distance of queries to all prototypes minus that between prototypes."""
        return torch.cdist(query, prototypes).pow(2).mean() - torch.cdist(prototypes, prototypes).pow(2).mean()

    @staticmethod
    def _renormalise(prototypes):
        # the released practice: prototypes are projected back on the unit sphere before each step
        with torch.no_grad():
            prototypes.copy_(F.normalize(prototypes, dim=-1))

    def _weighted_sum(self, terms):
        return sum(self.loss_weights[name] * value for name, value in terms.items())

    def calculate_loss(self, interaction):
        return self._weighted_sum(self.loss_terms(interaction))

    def loss_terms(self, interaction):
        """The unweighted losses of one batch, by name; a switched-off loss is absent."""
        if self.mode == "paper":
            return self._paper_loss_terms(interaction)
        return self._released_loss_terms(interaction)

    def _noise(self, reference):
        # evaluation runs the trajectory without noise (deterministic scores)
        return torch.randn_like(reference) if self.training else torch.zeros_like(reference)

    # ------------------------------------------------------------------ paper mode
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

        Slot k < T_u holds x̂_k (x̂_0 last); slots k >= T_u hold the start x_{T_u}. Without the
        denoiser, slot k holds the forward-noised x_k (x_0 itself at k = 0), one ε for all k.
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
        """The figure's blocks 2-4 for representations ``h`` [N, d] with controller ``logits``
        [N, T_max] (None: no controller, depth T_max). Returns a dict with the prediction
        ``output`` (h + z) and the intermediate ``depth``, ``mask``, ``states``, ``router``,
        ``gate``, ``experts`` ([N, 2, d], fine then coarse)."""
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
        """Paper-mode representations at the (batch row, position) pairs ``positions`` (a [B, L]
        bool mask); returns (h [N, d], controller logits [N, T_max] or None, augment dict or None)."""
        hidden = self.encoder(item_seq)
        h = hidden[positions]
        if not self.use_augmentation:
            return h, None, None
        logits = self.controller(hidden)[positions] if self.controller is not None else None
        return h, logits, self.augment(h, logits)

    def _paper_loss_terms(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        targets = self._targets(interaction)
        valid = targets > 0
        h, logits, parts = self.paper_forward(item_seq, valid)
        output = h if parts is None else parts["output"]
        weight = self.item_embedding.weight
        negatives = self._draw_negatives(item_seq, targets)
        terms = {"rec": self._rec_loss(output, targets[valid], None if negatives is None else negatives[valid], weight)}
        if self.use_denoiser and self.loss_weights["deno"] > 0:
            x0 = h.detach()
            t = uniform_steps(self.max_depth, x0.shape[0], x0.device)
            x_t = self.diffusion.q_sample(x0, t, noise=torch.randn_like(x0))
            terms["deno"] = (self.denoise(x_t, t) - x0).pow(2).sum(-1).mean()
        if logits is not None and self.loss_weights["expl"] > 0:
            terms["expl"] = self._exploration_loss(logits)
        if self.prototypes is not None:
            self._renormalise(self.prototypes)
            query, intent = self._intent_queries(h, self.prototypes)
            if self.loss_weights["cont"] > 0:
                coarse = h if parts is None else parts["experts"][:, COARSE]
                similarity = F.normalize(coarse, dim=-1) @ self.prototypes.t() / self.cl_temperature
                terms["cont"] = F.cross_entropy(similarity, intent)
            if self.loss_weights["cluster"] > 0:
                terms["cluster"] = self._cluster_regulariser(query, self.prototypes)
        return terms

    # ------------------------------------------------------------------ released mode
    def _released_mix(self, expert, embedded, item_len):
        """E_mix = Σ_k p_k q_sample(E_0, D_k) and the controller logits (one row per sequence)."""
        n_depths = expert.depth_index.numel()
        if expert.controller is not None:
            logits = expert.controller(embedded)
            logits = logits[torch.arange(logits.size(0), device=logits.device), item_len - 1]
            weights = torch.softmax(logits, dim=-1)
        else:
            logits = None
            weights = embedded.new_full((embedded.size(0), n_depths), 1.0 / n_depths)
        mixed = sum(
            weights[:, k, None, None]
            * self.diffusion.q_sample(embedded, expert.depth_index[k], noise=torch.randn_like(embedded))
            for k in range(n_depths)
        )
        return mixed, logits

    def _released_loss_terms(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_len = interaction[self.ITEM_SEQ_LEN]
        targets = self._targets(interaction)
        negatives = self._draw_negatives(item_seq, targets)
        real = (item_seq > 0).unsqueeze(-1)
        batch = item_seq.size(0)
        rows = torch.arange(batch, device=item_seq.device)
        w = self.loss_weights
        # the batch and its two views go through each expert in one encoder call
        sequences, lengths = [item_seq], [item_len]
        if w["instance"] > 0 or w["cont"] > 0:
            for _ in range(2):
                view, view_len = random_sequence_views(item_seq, item_len, *self.view_ratios)
                sequences.append(view)
                lengths.append(view_len)
        all_seq, all_len = torch.cat(sequences), torch.cat(lengths)
        terms = {}

        def add(name, value):
            terms[name] = terms.get(name, 0.0) + value

        for expert in self.experts:
            weight = expert.encoder.item_embedding.weight
            embedded = expert.encoder.embed(all_seq)
            if self.use_augmentation:  # clean batch, then the noised batch and views (training mode)
                mixed, logits = self._released_mix(expert, embedded, all_len)
                hidden = expert.encoder.encode(torch.cat([embedded[:batch], mixed]), torch.cat([item_seq, all_seq]))
                clean, noised, views = hidden[:batch], hidden[batch : 2 * batch], hidden[2 * batch :]
            else:
                hidden = expert.encoder.encode(embedded, all_seq)
                clean, views = hidden[:batch], hidden[batch:]
            add("rec", self._rec_loss(clean, targets, negatives, weight))
            if self.use_augmentation:
                if w["rec_noised"] > 0:
                    add("rec_noised", self._rec_loss(noised, targets, negatives, weight))
                if w["deno"] > 0:
                    add("deno", ((noised - clean.detach()) * real).pow(2).sum() / real.sum())
                if logits is not None and w["expl"] > 0:
                    add("expl", self._exploration_loss(logits[:batch]))
            encoded = list(zip(views.split(batch), lengths[1:]))
            if w["instance"] > 0:
                last = [view_hidden[rows, length - 1] for view_hidden, length in encoded]
                add("instance", info_nce(last[0], last[1], self.cl_temperature))
            if expert.prototypes is not None:
                self._renormalise(expert.prototypes)
                query, intent = self._intent_queries(_mean_over_real(clean, item_len), expert.prototypes)
                if w["cont"] > 0:
                    assigned = expert.prototypes[intent]
                    add("cont", sum(
                        info_nce(_mean_over_real(view_hidden, length), assigned, self.cl_temperature, labels=intent)
                        for view_hidden, length in encoded
                    ) / len(encoded))
                if w["cluster"] > 0:
                    add("cluster", self._cluster_regulariser(query, expert.prototypes))
        return terms

    # ------------------------------------------------------------------ scoring
    def forward(self, item_seq, item_seq_len):
        """The prediction representation at the last real position: paper mode r [B, d]; released
        mode one [B, d] per expert, stacked [E, B, d]."""
        last = torch.zeros_like(item_seq, dtype=torch.bool)
        last[torch.arange(item_seq.size(0), device=item_seq.device), item_seq_len - 1] = True
        if self.mode == "paper":
            h, _, parts = self.paper_forward(item_seq, last)
            return h if parts is None else parts["output"]
        return torch.stack([expert.encoder(item_seq)[last] for expert in self.experts])

    def full_sort_predict(self, interaction):
        representation = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        if self.mode == "paper":
            return representation @ self.item_embedding.weight.t()
        scores = [r @ expert.encoder.item_embedding.weight.t() for r, expert in zip(representation, self.experts)]
        return torch.stack(scores).mean(0)

    def predict(self, interaction):
        representation = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        items = interaction[self.ITEM_ID]
        if self.mode == "paper":
            return (representation * self.item_embedding(items)).sum(-1)
        scores = [
            (r * expert.encoder.item_embedding(items)).sum(-1) for r, expert in zip(representation, self.experts)
        ]
        return torch.stack(scores).mean(0)


def _mean_over_real(hidden, lengths):
    """Mean of ``hidden`` [B, L, d] over the first ``lengths`` [B] positions of each row."""
    real = (torch.arange(hidden.size(1), device=hidden.device) < lengths.unsqueeze(1)).unsqueeze(-1)
    return (hidden * real).sum(1) / lengths.clamp(min=1).unsqueeze(-1)
