r"""
DreamRec
################################################

Reference:
    Zhengyi Yang, Jiancan Wu, Zhicai Wang, Xiang Wang, Yancheng Yuan and Xiangnan He.
    "Generate What You Prefer: Reshaping Sequential Recommendation via Guided Diffusion."
    In NeurIPS 2023 (arXiv 2310.20453).

Design notes and measurements: ``docs/models/DreamRec.md``.
"""

import json
import os

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.compat import load_checkpoint
from recbole_diffusion.data.sequence import target_field
from recbole_diffusion.diffusion import (
    SCHEDULES, GaussianDiffusion, SinusoidalStepEmbedding, check_sampling_options, evaluation_generator, sampling_options,
    uniform_steps,
)
from recbole_diffusion.layers import full_softmax_ce
from recbole_diffusion.errors import ConfigError, OptionChecks

__all__ = ["DreamRec"]

DENOISERS = ("mlp1", "mlp2")

# The authors' code clips cosine betas to [1e-4, 0.9999] (the shared default is [0, 0.999]).
_SCHEDULE_KWARGS = {"cosine": {"min_beta": 1e-4, "max_beta": 0.9999}}


class DreamRecBlock(nn.Module):
    """One block of the authors' history encoder (the original SASRec arrangement).

    queries = LN(x); attention with Q from the normalised queries and K, V from x, causal and
    key-padding masked, dropout on the attention weights, plus the residual on the normalised
    queries; then LN, and a position-wise FFN (Linear -> ReLU -> Linear, dropout) whose residual
    is followed by its own LN. The caller zeroes padding rows after the block.
    """

    def __init__(self, hidden_size, n_heads, inner_size, hidden_dropout_prob, attn_dropout_prob):
        super().__init__()
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.attn_dropout_prob = attn_dropout_prob
        self.query_norm = nn.LayerNorm(hidden_size)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.ffn_input_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, inner_size),
            nn.ReLU(),
            nn.Linear(inner_size, hidden_size),
            nn.Dropout(hidden_dropout_prob),
        )
        self.ffn_output_norm = nn.LayerNorm(hidden_size)

    def _heads(self, x):
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.head_size).transpose(1, 2)

    def forward(self, x, allowed):
        """``x`` [B, L, d]; ``allowed`` [B, 1, L, L] bool, True where a query may attend a key."""
        queries = self.query_norm(x)
        attended = F.scaled_dot_product_attention(
            self._heads(self.query(queries)),
            self._heads(self.key(x)),
            self._heads(self.value(x)),
            attn_mask=allowed,
            dropout_p=self.attn_dropout_prob if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).reshape(x.shape) + queries
        ffn_input = self.ffn_input_norm(attended)
        return self.ffn_output_norm(ffn_input + self.ffn(ffn_input))


class DreamRec(SequentialRecommender):
    r"""DreamRec generates the next item's embedding by guided diffusion and ranks every item against it.

    A Transformer encodes the history into the guidance c; a denoiser f(x_t, c, t) learns to recover the
    target's embedding x_0 from its noised x_t, by the x_0 MSE alone, with c replaced by a learned null
    embedding Φ with probability ``unconditional_prob`` (classifier-free guidance). Evaluation runs the
    guided reverse chain, f̃ = (1 + w) f(x_t, c, t) - w f(x_t, Φ, t), and scores items by <x_0, E(item)>.

    NOTE: The paper is silent on these, which follow the authors' code: the history encoder (the original
        SASRec block), the step sinusoid's MLP, the N(0, 1) embedding initialisation and the cosine clipping.
    NOTE: Dropout is off at evaluation (the authors' code never turns it off); ``sqrt`` takes ᾱ_0 = 1 where
        the authors' discretisation implies 0.99.
    NOTE: Beyond the paper: ``n_sample_steps`` S < T runs a strided sampler (``sample_eta`` 1 ancestral,
        0 DDIM; ~, the default, is the paper's chain); the noise is seeded with ``sample_seed`` at every call.
    NOTE: The x_0 MSE collapses the item table on leave-one-out Beauty; ``rounding_loss_weight``,
        ``item_embedding_checkpoint`` and ``freeze_item_embedding`` (beyond the paper, off) counter it.
    NOTE: RecBole's protocol (leave-one-out, full ranking), not the paper's chronological 8:1:1 split.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # hyperparameters
        self.hidden_size = config["hidden_size"]
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.embedding_init_std = config["embedding_init_std"]
        self.denoiser_type = config["denoiser"]
        self.n_diffusion_steps = config["n_diffusion_steps"]
        self.noise_schedule = config["noise_schedule"]
        self.guidance_weight = float(config["guidance_weight"])
        self.unconditional_prob = float(config["unconditional_prob"])
        self.n_sample_steps, self.sample_eta, self.sample_seed = sampling_options(config)
        self.rounding_loss_weight = float(config["rounding_loss_weight"])
        self.item_embedding_checkpoint = config["item_embedding_checkpoint"]
        self.freeze_item_embedding = bool(config["freeze_item_embedding"])
        self.TARGET_SEQ = target_field(config)

        # layers
        d = self.hidden_size
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, d)
        self.null_embedding = nn.Parameter(torch.empty(d))  # Φ
        self.embedding_dropout = nn.Dropout(self.hidden_dropout_prob)
        self.blocks = nn.ModuleList(
            DreamRecBlock(d, self.n_heads, self.inner_size, self.hidden_dropout_prob, self.attn_dropout_prob)
            for _ in range(self.n_layers)
        )
        self.final_norm = nn.LayerNorm(d)
        self.step_embedding = SinusoidalStepEmbedding(d, mlp=True)
        if self.denoiser_type == "mlp1":
            self.denoiser = nn.Sequential(nn.Linear(3 * d, d))
        else:
            self.denoiser = nn.Sequential(nn.Linear(3 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.diffusion = GaussianDiffusion.from_schedule(
            self.noise_schedule, self.n_diffusion_steps, **_SCHEDULE_KWARGS.get(self.noise_schedule, {})
        )

        # initialisation (Linear layers keep PyTorch's default, as the authors')
        for weight in (self.item_embedding.weight, self.position_embedding.weight, self.null_embedding):
            nn.init.normal_(weight, mean=0.0, std=self.embedding_init_std)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        if self.item_embedding_checkpoint:
            self.load_item_embedding(self.item_embedding_checkpoint, config["dataset"])
        if self.freeze_item_embedding:
            self.item_embedding.weight.requires_grad_(False)

    def load_item_embedding(self, path, dataset):
        """Copy ``item_embedding.weight`` of a checkpoint this plugin's Trainer wrote (e.g. a SASRec
        trained on the same dataset) into the item table; ConfigError naming the option when the
        file, its dataset or its table's shape does not fit."""
        option = "item_embedding_checkpoint"
        try:
            checkpoint = load_checkpoint(path, map_location="cpu")
            stored = json.loads(checkpoint["config"])
            weight = checkpoint["state_dict"]["item_embedding.weight"]
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ConfigError(
                f"{option}: cannot read item_embedding.weight from {path} ({type(exc).__name__}: {exc}); "
                "give a checkpoint written by this plugin's Trainer for a model with an item_embedding table"
            ) from None
        if stored.get("dataset") != dataset:
            raise ConfigError(f"{option}: {path} was trained on {stored.get('dataset')!r}, not {dataset!r}: its item ids differ")
        if tuple(weight.shape) != tuple(self.item_embedding.weight.shape):
            raise ConfigError(
                f"{option}: {path} has an item table of shape {tuple(weight.shape)}, this model needs "
                f"{tuple(self.item_embedding.weight.shape)} (n_items, hidden_size); train it with hidden_size={self.hidden_size}"
            )
        with torch.no_grad():
            self.item_embedding.weight.copy_(weight)

    # ------------------------------------------------------------------ configuration
    @classmethod
    def check_config(cls, config):
        """Fail at start, naming the option, for settings the method cannot run with."""
        checks = OptionChecks(config)
        integer, number, choice = checks.integer, checks.number, checks.choice

        steps = integer("n_diffusion_steps", 1, note="the number of diffusion steps T")
        choice("noise_schedule", SCHEDULES)
        check_sampling_options(checks, steps)
        weight = number("guidance_weight", 0.0, note="the guidance strength w; the paper searches 0..10")
        prob = number(
            "unconditional_prob", 0.0, 1.0, high_open=True,
            note="the probability p_u of training with the null guidance; the paper fixes 0.1",
        )
        if prob == 0 and weight > 0:
            raise ConfigError(
                f"unconditional_prob: 0 never trains the null embedding, yet guidance_weight={weight} "
                "subtracts its prediction at sampling; use unconditional_prob > 0 or guidance_weight 0"
            )
        number("rounding_loss_weight", 0.0, note="0 is the paper (x_0-MSE only)")
        path = config["item_embedding_checkpoint"]
        if path is not None and not (isinstance(path, str) and os.path.isfile(path)):
            raise ConfigError(f"item_embedding_checkpoint: {path!r} is not a file (a checkpoint of this plugin's Trainer, or ~)")
        if not isinstance(config["freeze_item_embedding"], bool):
            raise ConfigError(f"freeze_item_embedding: must be True or False; got {config['freeze_item_embedding']!r}")
        choice("denoiser", DENOISERS, note="mlp1: Linear(3d, d), the authors'; mlp2: Linear(3d, 2d) -> GELU -> Linear(2d, d)")
        number("embedding_init_std", 0.0, low_open=True, note="the authors' 1.0")
        checks.transformer()
        checks.no_negative_sampling("DreamRec trains without negative samples (its loss is the diffusion MSE on the target's embedding)")

    # ------------------------------------------------------------------ encoder
    def encode(self, item_seq):
        """Causal encoder output at every position, [B, L, d] (padding rows are arbitrary)."""
        length = item_seq.size(1)
        positions = torch.arange(length, device=item_seq.device)
        real = (item_seq > 0).unsqueeze(-1)
        hidden = self.embedding_dropout(self.item_embedding(item_seq) + self.position_embedding(positions))
        hidden = hidden * real
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=item_seq.device))
        # a query attends earlier real items and itself (which keeps padding rows finite)
        allowed = causal & ((item_seq > 0).unsqueeze(1) | torch.eye(length, dtype=torch.bool, device=item_seq.device))
        allowed = allowed.unsqueeze(1)
        for block in self.blocks:
            hidden = block(hidden, allowed) * real
        return self.final_norm(hidden)

    def forward(self, item_seq, item_seq_len):
        """The guidance c: the encoder output at the last real position, [B, d] (Eq. 10)."""
        return self.gather_indexes(self.encode(item_seq), item_seq_len - 1)

    # ------------------------------------------------------------------ denoiser
    def denoise(self, x_t, condition, t):
        """f(x_t, c, t): the predicted x_0, [B, d]. ``t`` holds 0-based step indices, [B]."""
        # the step MLP runs once per distinct step (at sampling: once per step for the batch)
        steps, inverse = torch.unique(t, return_inverse=True)
        step_emb = self.step_embedding(steps)[inverse]
        return self.denoiser(torch.cat([x_t, condition, step_emb], dim=-1))

    def guided_x0(self, x_t, condition, t):
        """f̃ = (1 + w) f(x_t, c, t) - w f(x_t, Φ, t) (Eq. 15); f itself when w = 0."""
        if self.guidance_weight == 0:
            return self.denoise(x_t, condition, t)
        null = self.null_embedding.expand_as(condition)
        both = self.denoise(torch.cat([x_t, x_t]), torch.cat([condition, null]), torch.cat([t, t]))
        conditional, unconditional = both.chunk(2)
        return (1.0 + self.guidance_weight) * conditional - self.guidance_weight * unconditional

    def sampling_x0_fn(self, condition):
        """:meth:`guided_x0` for the reverse chain, ``(x_t, t) -> f̃``, where all rows of a step share
        one step index: the denoiser's input rows [x_t, c, step] (and [x_t, Φ, step] for the
        guidance) are laid out once, and each step writes only x_t and its step's embedding. The
        same numbers as :meth:`guided_x0`, without its per-step concatenations, gathers and sort."""
        n, d = condition.shape
        halves = 1 if self.guidance_weight == 0 else 2
        inputs = condition.new_empty(halves * n, 3 * d)
        inputs[:n, d : 2 * d] = condition
        if halves == 2:
            inputs[n:, d : 2 * d] = self.null_embedding.to(condition.dtype)

        def x0_fn(x_t, t):
            inputs[:, 2 * d :] = self.step_embedding(t[:1])  # t[:1]: the step every row shares
            inputs[:n, :d] = x_t
            if halves == 2:
                inputs[n:, :d] = x_t
            predicted = self.denoiser(inputs)
            if halves == 1:
                return predicted
            conditional, unconditional = predicted.chunk(2)
            return (1.0 + self.guidance_weight) * conditional - self.guidance_weight * unconditional

        return x0_fn

    # ------------------------------------------------------------------ training
    def draw_training_noise(self, n_targets, device):
        """Per-target draws of Algorithm 1: step index t ~ U{0..T-1}, ε ~ N(0, I), and whether the
        guidance is dropped (probability p_u). Returns ``(t [N], noise [N, d], drop [N] bool)``."""
        t = uniform_steps(self.n_diffusion_steps, n_targets, device)
        noise = torch.randn(n_targets, self.hidden_size, device=device)
        drop = torch.rand(n_targets, device=device) < self.unconditional_prob
        return t, noise, drop

    def diffusion_loss(self, condition, target_items):
        """Mean ||x_0 - f(x_t, c, t)||² over targets and dimensions (Algorithm 1, Eq. 14), plus
        ``rounding_loss_weight`` times the cross-entropy of the scores <f(x_t, c, t), E(item)>
        against the target over all items (the rounding term; 0 by default, the paper)."""
        x0 = self.item_embedding(target_items)
        t, noise, drop = self.draw_training_noise(x0.shape[0], x0.device)
        condition = torch.where(drop.unsqueeze(-1), self.null_embedding.expand_as(condition), condition)
        x_t = self.diffusion.q_sample(x0, t, noise=noise)
        predicted = self.denoise(x_t, condition, t)
        loss = F.mse_loss(predicted, x0)
        if self.rounding_loss_weight > 0:
            loss = loss + self.rounding_loss_weight * full_softmax_ce(predicted, self.item_embedding.weight, target_items)
        return loss

    def calculate_loss(self, interaction):
        hidden = self.encode(interaction[self.ITEM_SEQ])
        if self.TARGET_SEQ in interaction:  # sequence batch: every position guides its next item
            targets = interaction[self.TARGET_SEQ]
            valid = targets > 0
            condition, target_items = hidden[valid], targets[valid]
        else:  # RecBole prefix batch
            condition = self.gather_indexes(hidden, interaction[self.ITEM_SEQ_LEN] - 1)
            target_items = interaction[self.POS_ITEM_ID]
        return self.diffusion_loss(condition, target_items)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, condition, generator=None, n_sample_steps=None, eta=None):
        """Oracle item embeddings [B, d] by the guided reverse chain (Algorithm 2).

        ``generator`` defaults to a fresh generator seeded with ``sample_seed`` (~: the run's seed);
        ``n_sample_steps`` and ``eta`` default to the configured ``n_sample_steps`` and ``sample_eta``.
        """
        if generator is None:
            generator = evaluation_generator(self.sample_seed)
        return self.diffusion.sample(
            self.sampling_x0_fn(condition),
            shape=condition.shape,
            n_sample_steps=self.n_sample_steps if n_sample_steps is None else n_sample_steps,
            eta=self.sample_eta if eta is None else eta,
            generator=generator,
            device=condition.device,
            dtype=condition.dtype,
        )

    def predict(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        histories, inverse = torch.unique(item_seq, dim=0, return_inverse=True)
        lengths = (histories > 0).sum(dim=1)
        oracle = self.generate(self.forward(histories, lengths))[inverse]
        return (oracle * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction):
        oracle = self.generate(self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]))
        return oracle @ self.item_embedding.weight.t()
