r"""
DiffRec
################################################

Reference:
    Hanwen Du, Huanhuan Yuan, Zhen Huang, Pengpeng Zhao and Xiaofang Zhou. "Sequential
    Recommendation with Diffusion Models." arXiv:2304.04541, 2023.

Not RecBole's general recommender ``DiffRec`` (Wang et al., SIGIR 2023): in this plugin
``--model=DiffRec`` is this model. Design notes and measurements: ``docs/models/DiffRec.md``.
"""

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.data.sequence import target_field
from recbole_diffusion.diffusion import (
    SCHEDULES, GaussianDiffusion, SinusoidalStepEmbedding, StepImportanceSampler, check_sampling_options, evaluation_generator,
    make_betas, sampling_options,
)
from recbole_diffusion.layers import causal_padding_mask, full_softmax_ce
from recbole_diffusion.errors import ConfigError, OptionChecks

__all__ = ["DiffRec", "two_stream_encode"]

STEP_SAMPLING = ("importance", "uniform")
MSE_REDUCTIONS = ("mean", "sum")
# where the DSR's prediction is read: the noise-filled slot after the history (the paper, Eq. 16), a
# learned constant in that slot with no noise and no L_n (diffusion off), or the last history item's
# own output as SASRec reads it (no slot, no diffusion)
READOUTS = ("noise_slot", "constant_slot", "last_position")
# histories scored together at evaluation: few enough that their draws' scores (rows x D x n_items
# floats, 8 MiB) stay in the processor's cache, where the softmax and the sum over draws run about
# 2.5x faster than over a whole evaluation batch; at least SCORE_CHUNK_MIN_ROWS, with which the
# matrix product gives each row the same bits as over the whole batch (one or two rows take
# another kernel)
SCORE_CHUNK_FLOATS = 1 << 21
SCORE_CHUNK_MIN_ROWS = 8


# ---------------------------------------------------------------------------- two-stream encoder
def _split_heads(x, attention):
    batch, length, _ = x.shape
    return x.view(batch, length, attention.num_attention_heads, attention.attention_head_size).transpose(1, 2)


def _merge_heads(x):
    batch, heads, length, size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * size)


def _two_stream_attention(attention, clean, query, clean_mask, query_mask, update_clean=True):
    """One RecBole ``MultiHeadAttention`` applied to both streams with its own weights.

    The clean stream attends to itself under ``clean_mask``; each query-stream token attends to
    the clean tokens allowed by ``query_mask`` and to itself (never to other query tokens).
    """
    scale = attention.sqrt_attention_head_size
    key_clean = _split_heads(attention.key(clean), attention)
    value_clean = _split_heads(attention.value(clean), attention)
    q_query = _split_heads(attention.query(query), attention)
    key_query = _split_heads(attention.key(query), attention)
    value_query = _split_heads(attention.value(query), attention)

    cross = torch.matmul(q_query, key_clean.transpose(-1, -2)) / scale + query_mask
    own = (q_query * key_query).sum(dim=-1, keepdim=True) / scale
    probs = attention.attn_dropout(attention.softmax(torch.cat([cross, own], dim=-1)))
    context = torch.matmul(probs[..., :-1], value_clean) + probs[..., -1:] * value_query
    query_out = attention.dense(_merge_heads(context))
    query_out = attention.LayerNorm(attention.out_dropout(query_out) + query)

    if not update_clean:
        return clean, query_out
    q_clean = _split_heads(attention.query(clean), attention)
    scores = torch.matmul(q_clean, key_clean.transpose(-1, -2)) / scale + clean_mask
    probs = attention.attn_dropout(attention.softmax(scores))
    clean_out = attention.dense(_merge_heads(torch.matmul(probs, value_clean)))
    clean_out = attention.LayerNorm(attention.out_dropout(clean_out) + clean)
    return clean_out, query_out


def two_stream_encode(encoder, clean, query, clean_mask, query_mask):
    """Run a RecBole ``TransformerEncoder`` on a clean stream and a query stream (XLNet-style).

    Args:
        encoder: ``recbole.model.layers.TransformerEncoder``; its weights serve both streams.
        clean: [B, L, d] embedded clean tokens.
        query: [B, Q, d] embedded query tokens.
        clean_mask: [B, 1, L, L] additive mask of the clean stream (causal + padding).
        query_mask: [B, 1, Q, L] additive mask of the query tokens over the clean tokens.

    Returns the query stream's output [B, Q, d]. A query token's output equals the output that
    the same token gets at the end of [allowed clean tokens, token] in an ordinary causal
    encoder, provided that the clean tokens it may see only see clean tokens it may see (true
    for ``query_mask`` = "positions <= j" with a causal ``clean_mask``).
    """
    layers = encoder.layer
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        clean, query = _two_stream_attention(
            layer.multi_head_attention, clean, query, clean_mask, query_mask, update_clean=not last
        )
        query = layer.feed_forward(query)
        if not last:
            clean = layer.feed_forward(clean)
    return query


def _query_mask(present, limits):
    """[B, 1, Q, L] additive mask: query q sees clean position k iff k <= limits[b, q] and present."""
    positions = torch.arange(present.size(1), device=present.device)
    allowed = (positions.view(1, 1, -1) <= limits.unsqueeze(-1)) & present.unsqueeze(1)
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=present.device)
    return mask.masked_fill(~allowed, -10000.0).unsqueeze(1)


# ---------------------------------------------------------------------------- the model
class DiffRec(SequentialRecommender):
    r"""DiffRec denoises the embedding of the next item in a slot after the clean history.

    Only the target is noised, h^n = sqrt(ᾱ_n) E(v) + sqrt(1 - ᾱ_n) ε; a Transformer (the DSR) reads the
    history, the slot, position embeddings and the step's sinusoid, and its output at the slot, the predicted
    E(v), is scored by softmax(W h + b). Loss: the MSE L_n at an importance-sampled step n plus the
    cross-entropy L_Rec. Evaluation denoises pure noise in ``n_sample_steps`` steps (1, the default, is Algorithm 3;
    ~ is the chain N -> 1, Algorithm 2) and averages the item distributions of ``n_sample_draws`` noise draws.

    NOTE: L_n is averaged over the d features (``mse_reduction: sum`` is Eq. 13) and weighted by 1 / (N p_n),
        the estimate of its mean over steps, where Eq. 18's L_n / p_n estimates their sum (N times larger).
    NOTE: Scales the paper leaves open were chosen on valid NDCG@10 of amazon-beauty (``step_embedding_scale``,
        ``mse_loss_weight``); item and position embeddings start at SASRec's std 0.02 (``embedding_init_std``).
    NOTE: The DSR's input sum goes through LayerNorm and dropout (SASRec's input block) into RecBole's post-LN
        encoder (``input_layer_norm: False`` is Eq. 14's bare sum); the step sinusoid has no MLP by default
        (``step_embedding_mlp``).
    NOTE: ``readout``, ``output_bias`` and ``tie_output_weights`` exist to take the gap to SASRec apart
        (``docs/models/DiffRec.md``): ``readout: constant_slot`` switches diffusion off, ``last_position`` is
        SASRec's readout; neither is the paper's method.
    NOTE: ``train_mode: sequence`` (the default) trains every target of a user window at once with a two-stream
        encoder (the same outputs as prefix training), one step n per window; ``noised_items`` > 1 needs prefix.
    NOTE: Evaluation noise comes from a CPU generator seeded with ``sample_seed`` at every call: reproducible,
        but a user's draws depend on its row in the batch.
    """

    input_type = InputType.POINTWISE
    # the output for a user never reads trailing padding: full-sort evaluation may trim it
    # (recbole_diffusion.evaluation)
    TRIM_EVAL_PADDING = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # hyperparameters
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]
        self.inner_size = config["inner_size"] or 4 * self.hidden_size
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.embedding_init_std = config["embedding_init_std"]
        position_std = config["position_embedding_init_std"]
        self.position_embedding_init_std = self.embedding_init_std if position_std is None else position_std
        self.n_diffusion_steps = config["n_diffusion_steps"]
        self.noise_schedule = config["noise_schedule"]
        self.step_sampling = config["step_sampling"]
        self.loss_history_size = config["loss_history_size"]
        self.importance_uniform_prob = config["importance_uniform_prob"]
        self.mse_loss_weight = config["mse_loss_weight"]
        self.mse_reduction = config["mse_reduction"]
        self.step_embedding_scale = float(config["step_embedding_scale"])
        self.step_embedding_mlp = config["step_embedding_mlp"]
        self.rec_loss_weight = config["rec_loss_weight"]
        self.n_sample_steps, self.sample_eta, self.sample_seed = sampling_options(config)
        self.n_sample_draws = config["n_sample_draws"]
        self.use_position_embedding = config["use_position_embedding"]
        self.use_step_embedding = config["use_step_embedding"]
        self.noised_items = config["noised_items"]
        self.tie_output_weights = config["tie_output_weights"]
        self.output_bias = config["output_bias"]
        self.input_layer_norm = config["input_layer_norm"]
        self.readout = config["readout"]
        self.TARGET_SEQ = target_field(config)

        # layers
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.step_embedding = SinusoidalStepEmbedding(self.hidden_size, mlp=self.step_embedding_mlp)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        self.trm_encoder = TransformerEncoder(
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            hidden_size=self.hidden_size,
            inner_size=self.inner_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
        )
        self.output_layer = nn.Linear(self.hidden_size, self.n_items, bias=self.output_bias)  # W, b of Eq. 8
        self.diffusion = GaussianDiffusion.from_schedule(self.noise_schedule, self.n_diffusion_steps)
        self.step_sampler = StepImportanceSampler(
            self.n_diffusion_steps,
            history_size=self.loss_history_size,
            uniform_prob=self.importance_uniform_prob,
            importance=self.step_sampling == "importance",
        )

        # parameters initialization
        self.apply(self._init_weights)
        if self.tie_output_weights:
            self.output_layer.weight = self.item_embedding.weight
        if self.readout == "constant_slot":  # created last: the other weights start as in the default
            self.slot_embedding = nn.Parameter(torch.randn(self.hidden_size) * self.embedding_init_std)

    @classmethod
    def check_config(cls, config):
        """Refuse impossible hyperparameters before any data is read."""
        checks = OptionChecks(config)
        get, integer, number, boolean, choice = checks.get, checks.integer, checks.number, checks.boolean, checks.choice

        n_steps = integer("n_diffusion_steps", 1)
        schedule = choice("noise_schedule", SCHEDULES)
        try:
            make_betas(schedule, n_steps)
        except ValueError as exc:
            raise ConfigError(f"noise_schedule: {exc}") from None
        choice("step_sampling", STEP_SAMPLING)
        integer("loss_history_size", 1)
        number("importance_uniform_prob", 0.0, 1.0)
        mse = number("mse_loss_weight", 0.0, float("inf"))
        choice("mse_reduction", MSE_REDUCTIONS)
        number("step_embedding_scale", 0.0, float("inf"))
        rec = number("rec_loss_weight", 0.0, float("inf"))
        if mse == 0 and rec == 0:
            raise ConfigError("mse_loss_weight, rec_loss_weight: at least one must be positive; both are 0")
        if number("embedding_init_std", 0.0, float("inf")) == 0:
            raise ConfigError("embedding_init_std: must be positive; got 0")
        if get("position_embedding_init_std") is not None:
            number("position_embedding_init_std", 0.0, float("inf"), low_open=True)
        check_sampling_options(checks, n_steps)
        integer("n_sample_draws", 1)
        for key in ("use_position_embedding", "use_step_embedding", "step_embedding_mlp", "tie_output_weights",
                    "output_bias", "input_layer_norm"):
            boolean(key)
        readout = choice("readout", READOUTS)
        if readout != "noise_slot" and rec == 0:
            raise ConfigError(
                f"readout: {readout!r} trains with L_Rec alone (there is no noise to denoise), so "
                "rec_loss_weight must be positive; got 0"
            )
        if readout != "noise_slot" and get("noised_items", 1) != 1:
            raise ConfigError(f"noised_items: readout {readout!r} has no diffusion, so K must be 1")
        checks.transformer()
        max_length = integer("MAX_ITEM_LIST_LENGTH", 2)
        noised = integer("noised_items", 1)
        if noised > max_length:
            raise ConfigError(
                f"noised_items: K noises the target slot and the K - 1 latest history items of a "
                f"MAX_ITEM_LIST_LENGTH={max_length} input, so K <= {max_length}; got {noised}"
            )
        if noised > 1 and get("train_mode") == "sequence":
            raise ConfigError(
                f"noised_items: K = {noised} > 1 noises history items that differ per target, which "
                "the two-stream sequence training cannot share; use train_mode=prefix for K > 1"
            )
        checks.no_negative_sampling("DiffRec trains with a full softmax over items (L_Rec) and takes no negative samples")

    def _init_weights(self, module):
        """SASRec's initialisation (normal(0, initializer_range) weights, zero biases), except the
        item and position embeddings: normal(0, embedding_init_std)."""
        if module is self.item_embedding:
            module.weight.data.normal_(mean=0.0, std=self.embedding_init_std)
        elif module is self.position_embedding:
            module.weight.data.normal_(mean=0.0, std=self.position_embedding_init_std)
        else:
            SASRec._init_weights(self, module)

    # ------------------------------------------------------------------ DSR building blocks
    def _embed(self, token_emb, positions, steps):
        """Eq. 14: tokens + position embedding + step embedding (none when ``steps`` is None), then
        LayerNorm (``input_layer_norm``) and dropout.

        ``token_emb`` [B, S, d]; ``positions`` [S] or [B, S]; ``steps`` [B] 0-based indices.
        """
        hidden = token_emb
        if self.use_position_embedding:
            hidden = hidden + self.position_embedding(positions)
        if self.use_step_embedding and steps is not None:
            step_emb = self.step_embedding_scale * self.step_embedding(steps).to(hidden.dtype)
            hidden = hidden + step_emb.unsqueeze(1)
        if self.input_layer_norm:
            hidden = self.LayerNorm(hidden)
        return self.dropout(hidden)

    def _prefix_inputs(self, item_seq, item_seq_len):
        """History [B, W] -> (DSR item ids [B, W'] with 0 at the slot, slot index [B]).

        W' = min(longest history + 1, L), L = MAX_ITEM_LIST_LENGTH: trailing padding is cut or
        added as needed (it cannot change any output, the attention being causal). A history of
        L items loses its oldest item.
        """
        length = self.max_seq_length
        width = min(int(item_seq_len.max()) + 1, length)
        if item_seq.size(1) < width:
            item_seq = F.pad(item_seq, (0, width - item_seq.size(1)))
        item_seq = item_seq[:, :width]
        full = item_seq_len >= length
        shifted = torch.where(full.unsqueeze(1), torch.roll(item_seq, shifts=-1, dims=1), item_seq)
        slot = torch.where(full, torch.full_like(item_seq_len, length - 1), item_seq_len)
        at_slot = torch.arange(width, device=item_seq.device).unsqueeze(0) == slot.unsqueeze(1)
        return shifted.masked_fill(at_slot, 0), slot

    def _noise_recent(self, token_emb, slot, steps, noise):
        """Noise the K - 1 history tokens right before the slot (the K > 1 ablation)."""
        positions = torch.arange(token_emb.size(1), device=token_emb.device).unsqueeze(0)
        recent = (positions < slot.unsqueeze(1)) & (positions >= (slot - self.noised_items + 1).unsqueeze(1))
        noised = self.diffusion.q_sample(token_emb, steps, noise=noise)
        return torch.where(recent.unsqueeze(-1), noised, token_emb)

    def denoise_prefix(self, history, slot, x_slot, steps, history_noise=None):
        """f_θ on the plain input: the DSR output at the slot, [B, d].

        Args:
            history: [B, L] item ids from :meth:`_prefix_inputs` (0 at the slot and padding).
            slot: [B] slot index.
            x_slot: [B, d] the noised target h_T^n.
            steps: [B] 0-based step indices.
            history_noise: [B, L, d] noise of the K - 1 noised history items (K > 1 only).
        """
        positions = torch.arange(history.size(1), device=history.device)
        at_slot = (positions.unsqueeze(0) == slot.unsqueeze(1)).unsqueeze(-1)
        token_emb = self.item_embedding(history)
        if self.noised_items > 1:
            if history_noise is None:
                history_noise = self._noise_like(token_emb)
            token_emb = self._noise_recent(token_emb, slot, steps, history_noise)
        token_emb = torch.where(at_slot, x_slot.unsqueeze(1).to(token_emb.dtype), token_emb)
        present = (history > 0) | at_slot.squeeze(-1)
        hidden = self._embed(token_emb, positions, steps)
        mask = causal_padding_mask(present.long()).to(hidden.dtype)
        output = self.trm_encoder(hidden, mask, output_all_encoded_layers=False)[-1]
        return output[torch.arange(output.size(0), device=output.device), slot]

    def denoise_slots(self, history, slot, x_slots, steps):
        """f_θ for several noised slots per history at once, [B, D, d] (K = 1 only).

        Every slot draw ``x_slots[:, i]`` sits at position ``slot`` after the same clean
        history; the history is encoded once (two-stream encoder) and shared by the draws.
        """
        positions = torch.arange(history.size(1), device=history.device)
        clean = self._embed(self.item_embedding(history), positions, steps)
        query = self._embed(x_slots, slot.unsqueeze(1).expand(-1, x_slots.size(1)), steps)
        present = history > 0
        clean_mask = causal_padding_mask(history).to(clean.dtype)
        limits = (slot - 1).unsqueeze(1).expand(-1, x_slots.size(1))
        query_mask = _query_mask(present, limits).to(clean.dtype)
        return two_stream_encode(self.trm_encoder, clean, query, clean_mask, query_mask)

    def denoise_sequence(self, item_seq, item_seq_len, x_targets, steps):
        """f_θ at every target of a sequence batch, [B, Q, d] with Q = min(W, L - 1).

        ``x_targets[:, j]`` is the noised embedding of the item after ``item_seq[:, j]``; its
        output is what the prefix input [item_seq[:, :j+1], x_targets[:, j]] gives at the slot.
        """
        width = item_seq.size(1)
        n_queries = x_targets.size(1)
        positions = torch.arange(width, device=item_seq.device)
        clean = self._embed(self.item_embedding(item_seq), positions, steps)
        query = self._embed(x_targets, positions[:n_queries] + 1, steps)
        clean_mask = causal_padding_mask(item_seq).to(clean.dtype)
        limits = positions[:n_queries].unsqueeze(0).expand(item_seq.size(0), -1)
        query_mask = _query_mask(item_seq > 0, limits).to(clean.dtype)
        return two_stream_encode(self.trm_encoder, clean, query, clean_mask, query_mask)

    def encode_positions(self, item_seq):
        """The DSR on the clean history alone (``readout: last_position``): [B, W, d], causal."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        hidden = self._embed(self.item_embedding(item_seq), positions, None)
        mask = causal_padding_mask(item_seq).to(hidden.dtype)
        return self.trm_encoder(hidden, mask, output_all_encoded_layers=False)[-1]

    def encode_history(self, item_seq, item_seq_len):
        """The output at each history's last item (``readout: last_position``): [B, d]."""
        width = min(int(item_seq_len.max()), item_seq.size(1))
        output = self.encode_positions(item_seq[:, :width])
        return output[torch.arange(output.size(0), device=output.device), item_seq_len - 1]

    # ------------------------------------------------------------------ training
    def _noise_like(self, x):
        """ε ~ N(0, I) for training, from the global random state (seeded by RecBole)."""
        return torch.randn_like(x)

    def calculate_loss(self, interaction):
        if self.TARGET_SEQ in interaction:
            return self._sequence_loss(interaction)
        return self._prefix_loss(interaction)

    def _prefix_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        target = interaction[self.POS_ITEM_ID]
        if self.readout == "last_position":
            predicted = self.encode_history(item_seq, item_seq_len)
            sequence_index = torch.arange(target.size(0), device=target.device)
            return self._loss(predicted, None, target, sequence_index, None, None)
        history, slot = self._prefix_inputs(item_seq, item_seq_len)
        steps, weights = self._sample_steps(target.size(0), target.device)
        clean_target = self.item_embedding(target)
        x_slot = self._slot_input(clean_target, steps)
        predicted = self.denoise_prefix(history, slot, x_slot, steps)
        sequence_index = torch.arange(target.size(0), device=target.device)
        return self._loss(predicted, clean_target, target, sequence_index, steps, weights)

    def _sequence_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        targets = interaction[self.TARGET_SEQ]
        batch, width = item_seq.shape
        length = self.max_seq_length
        rows = torch.arange(batch, device=item_seq.device)
        if self.readout == "last_position":  # SASRec's readout: position j's output predicts target j
            output = self.encode_positions(item_seq)
            valid = targets[:, :width] > 0
            sequence_index = rows.unsqueeze(1).expand(-1, width)[valid]
            return self._loss(output[valid], None, targets[:, :width][valid], sequence_index, None, None)
        steps, weights = self._sample_steps(batch, item_seq.device)

        n_queries = min(width, length - 1)
        query_targets = targets[:, :n_queries]
        clean_targets = self.item_embedding(query_targets)
        x_targets = self._slot_input(clean_targets, steps)
        output = self.denoise_sequence(item_seq, item_seq_len, x_targets, steps)
        valid = query_targets > 0
        predicted = [output[valid]]
        clean = [clean_targets[valid]]
        items = [query_targets[valid]]
        sequence_index = [rows.unsqueeze(1).expand(-1, n_queries)[valid]]

        if width >= length:  # the last target of a full window: drop the oldest item
            full = targets[:, length - 1] > 0
            if bool(full.any()):
                history, slot = self._prefix_inputs(item_seq[full, :length], item_seq_len[full])
                item = targets[full, length - 1]
                clean_full = self.item_embedding(item)
                full_steps = None if steps is None else steps[full]
                x_slot = self._slot_input(clean_full, full_steps)
                predicted.append(self.denoise_prefix(history, slot, x_slot, full_steps))
                clean.append(clean_full)
                items.append(item)
                sequence_index.append(rows[full])
        return self._loss(
            torch.cat(predicted), torch.cat(clean), torch.cat(items), torch.cat(sequence_index), steps, weights
        )

    def _sample_steps(self, batch, device):
        """(steps, weights) of the importance sampler; (None, None) when the readout has no diffusion."""
        if self.readout != "noise_slot":
            return None, None
        return self.step_sampler.sample(batch, device=device)

    def _slot_input(self, clean_target, steps):
        """What the slot holds in training: h^n = q(E(v), n) (the paper), or the learned constant."""
        if self.readout == "constant_slot":
            return self.slot_embedding.to(clean_target.dtype).expand_as(clean_target)
        return self.diffusion.q_sample(clean_target, steps, noise=self._noise_like(clean_target))

    def _loss(self, predicted, clean_target, target, sequence_index, steps, weights):
        """mse_loss_weight * mean_targets(L_n / (N p_n)) + rec_loss_weight * mean_targets(L_Rec).

        ``sequence_index`` [M] maps each target to its sequence, whose step and weight it uses;
        one L_n per sequence (the mean over its targets) goes to the step sampler's history.
        Without diffusion (``readout`` other than the noise slot: ``steps`` is None) L_Rec alone.
        """
        rec = full_softmax_ce(predicted, self.output_layer.weight, target, self.output_layer.bias)
        if steps is None:
            return self.rec_loss_weight * rec
        squared = (predicted - clean_target).pow(2)
        mse = squared.mean(dim=-1) if self.mse_reduction == "mean" else squared.sum(dim=-1)
        diffusion_loss = (weights[sequence_index] * mse).mean()
        if self.training:
            n_sequences = steps.size(0)
            totals = torch.zeros(n_sequences, device=mse.device, dtype=mse.dtype).index_add_(0, sequence_index, mse.detach())
            counts = torch.zeros(n_sequences, device=mse.device, dtype=mse.dtype).index_add_(
                0, sequence_index, torch.ones_like(mse)
            )
            seen = counts > 0
            self.step_sampler.record(steps[seen], totals[seen] / counts[seen])
        return self.mse_loss_weight * diffusion_loss + self.rec_loss_weight * rec

    # ------------------------------------------------------------------ inference
    def generate(self, item_seq, item_seq_len, generator=None):
        """Predicted h_T^0 of the next item for each history, one per draw: [B, D, d].

        ``n_sample_steps: 1`` is Algorithm 3 (one denoising step from h_T^N = ε); ``~`` runs the
        ancestral reverse chain N -> 1 (Algorithm 2); S in between, the strided chain.
        """
        if self.readout == "last_position":
            return self.encode_history(item_seq, item_seq_len).unsqueeze(1)
        if generator is None:
            generator = evaluation_generator(self.sample_seed)
        history, slot = self._prefix_inputs(item_seq, item_seq_len)
        if self.readout == "constant_slot":
            constant = self.slot_embedding.view(1, 1, -1).expand(history.size(0), 1, -1)
            return self.denoise_slots(history, slot, constant, None)
        batch, draws, dim = history.size(0), self.n_sample_draws, self.hidden_size
        dtype = self.item_embedding.weight.dtype
        device = history.device

        if self.noised_items == 1:
            def x0_fn(x_t, t):
                return self.denoise_slots(history, slot, x_t, t)

            return self.diffusion.sample(
                x0_fn, shape=(batch, draws, dim), n_sample_steps=self.n_sample_steps, eta=self.sample_eta,
                generator=generator, device=device, dtype=dtype,
            )

        history_draws = history.repeat_interleave(draws, dim=0)
        slot_draws = slot.repeat_interleave(draws, dim=0)

        def x0_fn_noised_history(x_t, t):
            noise = torch.randn((x_t.size(0), history.size(1), dim), generator=generator, dtype=dtype).to(device)
            return self.denoise_prefix(history_draws, slot_draws, x_t, t, history_noise=noise)

        x0 = self.diffusion.sample(
            x0_fn_noised_history, shape=(batch * draws, dim), n_sample_steps=self.n_sample_steps, eta=self.sample_eta,
            generator=generator, device=device, dtype=dtype,
        )
        return x0.view(batch, draws, dim)

    def log_mean_probability(self, predicted):
        """log((1/D) Σ_i softmax(W h_i + b)) for h = ``predicted`` [B, D, d] -> [B, n_items]."""
        batch, draws, n_items = predicted.size(0), predicted.size(1), self.output_layer.out_features
        rows = max(SCORE_CHUNK_MIN_ROWS, SCORE_CHUNK_FLOATS // (draws * n_items))
        bounds = list(range(0, batch, rows)) + [batch]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < SCORE_CHUNK_MIN_ROWS:
            del bounds[-2]  # a short tail joins the chunk before it
        scores = predicted.new_empty(batch, n_items)
        for start, end in zip(bounds[:-1], bounds[1:]):
            total = None
            for draw in range(draws):
                probability = F.softmax(self.output_layer(predicted[start:end, draw]), dim=-1)
                total = probability if total is None else total.add_(probability)
            torch.log(total.div_(draws), out=scores[start:end])
        return scores

    def forward(self, item_seq, item_seq_len, generator=None):
        """The predicted next-item representations h_T^0, one per evaluation draw: [B, D, d]."""
        return self.generate(item_seq, item_seq_len, generator=generator)

    def full_sort_predict(self, interaction):
        return self.log_mean_probability(self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]))

    def predict(self, interaction):
        scores = self.full_sort_predict(interaction)
        items = interaction[self.ITEM_ID]
        return scores.gather(1, items.unsqueeze(1)).squeeze(1)
