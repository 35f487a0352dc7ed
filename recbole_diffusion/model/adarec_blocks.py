"""What ADARec's two models share: the SASRec encoder, the depth controller, the intent prototypes
and the losses (``ADARec``: the paper's framework figure; ``ADARecReleased``: the authors' code).

``ADARecBase`` reads the options both read, checks them, and holds the losses both compute; each
model builds its own layers and computes its own loss terms (``loss_terms``).
"""

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.data.sequence import target_field
from recbole_diffusion.diffusion import SCHEDULES, GaussianDiffusion, make_betas
from recbole_diffusion.errors import ConfigError, OptionChecks
from recbole_diffusion.layers import causal_padding_mask, full_softmax_ce, sample_negative_items, sasrec_input

REC_LOSSES = ("ce", "bce")
# options of the single ADARec class that ran either method (before ADARecReleased was its own model)
RENAMED_OPTIONS = {
    "adarec_mode": "ADARec is the paper's method only; the authors' released code is the model ADARecReleased",
    "released_depths": "renamed; the depths of ADARecReleased's experts are expert_depths",
}


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
        return sasrec_input(self.item_embedding(item_seq), self.position_embedding, self.LayerNorm, self.dropout)

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


class ADARecBase(SequentialRecommender):
    """The options, checks and losses of ``ADARec`` and ``ADARecReleased``.

    A subclass names its loss weights (``LOSS_WEIGHTS``: loss name -> option), builds its layers
    after ``super().__init__`` and then calls :meth:`initialise`, and returns its unweighted losses
    by name from ``loss_terms``.
    """

    input_type = InputType.POINTWISE
    # outputs read only the causal prefix up to item_length - 1: full-sort evaluation may trim padding
    TRIM_EVAL_PADDING = True
    LOSS_WEIGHTS = {}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # hyperparameters both models read
        self.hidden_size = config["hidden_size"]
        self.initializer_range = config["initializer_range"]
        self.n_diffusion_steps = config["n_diffusion_steps"]
        self.noise_schedule = config["noise_schedule"]
        self.use_augmentation = config["use_augmentation"]
        self.use_depth_controller = config["use_depth_controller"] and self.use_augmentation
        self.rec_loss = config["rec_loss"]
        self.loss_weights = {"rec": 1.0, **{name: config[key] for name, key in self.LOSS_WEIGHTS.items()}}
        self.n_prototypes = config["n_prototypes"] if self.loss_weights["cont"] or self.loss_weights["cluster"] else 0
        self.cl_temperature = config["cl_temperature"]
        self.TARGET_SEQ = target_field(config)
        self.diffusion = GaussianDiffusion.from_schedule(self.noise_schedule, self.n_diffusion_steps)

    def initialise(self):
        """SASRec's initialisation for every layer; the prototypes become random unit vectors."""
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
        """Fail at start, naming the option, for settings both models cannot run with; returns the
        checks and the number of diffusion steps for the subclass's own checks."""
        checks = OptionChecks(config)
        checks.refuse_renamed(RENAMED_OPTIONS)
        n_steps = checks.integer("n_diffusion_steps", 1)
        schedule = checks.choice("noise_schedule", SCHEDULES)
        try:
            make_betas(schedule, n_steps)
        except ValueError as exc:
            raise ConfigError(f"noise_schedule: {exc}") from None
        for key in ("use_augmentation", "use_depth_controller"):
            checks.boolean(key)
        checks.choice("rec_loss", REC_LOSSES)
        for key in cls.LOSS_WEIGHTS.values():
            checks.number(key, 0.0)
        checks.integer("n_prototypes", 1)
        checks.number("cl_temperature", 0.0, low_open=True)
        checks.transformer()
        checks.no_negative_sampling(f"{cls.__name__} draws its own negatives (rec_loss: bce) or uses the full softmax (ce)")
        return checks, n_steps

    # ------------------------------------------------------------------ losses
    def calculate_loss(self, interaction):
        return self.weighted_sum(self.loss_terms(interaction))

    def loss_terms(self, interaction):
        """The unweighted losses of one batch, by name; a switched-off loss is absent."""
        raise NotImplementedError

    def weighted_sum(self, terms):
        return sum(self.loss_weights[name] * value for name, value in terms.items())

    def targets(self, interaction):
        """Next item at every position, [B, L] (0 = none): a sequence batch's, or the prefix target
        at item_length - 1 for RecBole's prefix samples."""
        if self.TARGET_SEQ in interaction:
            return interaction[self.TARGET_SEQ]
        item_seq = interaction[self.ITEM_SEQ]
        targets = torch.zeros_like(item_seq)
        rows = torch.arange(item_seq.size(0), device=item_seq.device)
        targets[rows, interaction[self.ITEM_SEQ_LEN] - 1] = interaction[self.POS_ITEM_ID]
        return targets

    def rec_loss_of(self, hidden, targets, negatives, item_weight):
        """L_rec over the valid positions: full-softmax CE or BCE with one negative per target."""
        valid = targets > 0
        if self.rec_loss == "ce":
            return full_softmax_ce(hidden[valid], item_weight, targets[valid])
        hidden = hidden[valid]
        positive = (hidden * item_weight[targets[valid]]).sum(-1)
        negative = (hidden * item_weight[negatives[valid]]).sum(-1)
        return -(F.logsigmoid(positive) + F.logsigmoid(-negative)).mean()

    def draw_negatives(self, item_seq, targets):
        """One uniform negative per position outside the row's items (rec_loss: bce), else None."""
        if self.rec_loss != "bce":
            return None
        return sample_negative_items(self.n_items, targets.shape, torch.cat([item_seq, targets], dim=1))

    @staticmethod
    def exploration_loss(logits):
        """-entropy of softmax(logits), averaged: minimising it keeps the controller exploring."""
        log_probs = F.log_softmax(logits, dim=-1)
        return (log_probs.exp() * log_probs).sum(-1).mean()

    @staticmethod
    def intent_queries(representation, prototypes):
        """Normalised detached queries and the index of each one's nearest prototype."""
        query = F.normalize(representation.detach(), dim=-1)
        return query, torch.cdist(query, prototypes).argmin(dim=-1)

    @staticmethod
    def cluster_regulariser(query, prototypes):
        """ELCRec: mean squared distance of queries to all prototypes minus that between prototypes."""
        return torch.cdist(query, prototypes).pow(2).mean() - torch.cdist(prototypes, prototypes).pow(2).mean()

    @staticmethod
    def renormalise(prototypes):
        # the released practice: prototypes are projected back on the unit sphere before each step
        with torch.no_grad():
            prototypes.copy_(F.normalize(prototypes, dim=-1))

    @staticmethod
    def last_positions(item_seq, item_seq_len):
        """[B, L] bool mask of each row's last real position."""
        last = torch.zeros_like(item_seq, dtype=torch.bool)
        last[torch.arange(item_seq.size(0), device=item_seq.device), item_seq_len - 1] = True
        return last


def mean_over_real(hidden, lengths):
    """Mean of ``hidden`` [B, L, d] over the first ``lengths`` [B] positions of each row."""
    real = (torch.arange(hidden.size(1), device=hidden.device) < lengths.unsqueeze(1)).unsqueeze(-1)
    return (hidden * real).sum(1) / lengths.clamp(min=1).unsqueeze(-1)
