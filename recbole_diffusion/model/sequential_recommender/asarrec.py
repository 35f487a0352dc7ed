r"""
AsarRec
################################################

Reference:
    Kaike Zhang, Qi Cao, Fei Sun, Xinran Liu (v2: + Huawei Shen, Xueqi Cheng). "AsarRec: Adaptive Sequential
    Augmentation for Robust Self-supervised Sequential Recommendation." arXiv 2512.14047, 2025.
"""

import math

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType
from torch import nn

from recbole_diffusion import augmentation as aug
from recbole_diffusion.data.sequence import target_field
from recbole_diffusion.layers import info_nce, sasrec_input, semi_sinkhorn, sequence_ce_loss, straight_through
from recbole_diffusion.errors import ConfigError, OptionChecks, RecBoleDiffusionError

__all__ = ["AsarRec"]

BACKBONES = ("SASRec", "GRU4Rec")
AUGMENTATIONS = {"learned": None, "static_cl4srec": aug.CL4SREC_OPERATORS, "static_coserec": aug.COSEREC_OPERATORS}
STATIC_RATIOS = ("crop_ratio", "mask_ratio", "reorder_ratio", "insert_ratio", "substitute_ratio")


class AsarRec(SequentialRecommender):
    r"""AsarRec learns the augmentations of self-supervised sequential recommendation: an augmentation encoder
    turns each training sequence into a hard semi-doubly stochastic matrix (crop, mask, reorder, insert and
    substitute in one), and two such views train a SASRec or GRU4Rec backbone with InfoNCE, a diversity term and
    an NDCG constraint next to the next-item CE. ``augmentation: static_cl4srec | static_coserec`` uses CL4SRec's
    or CoSeRec's random views instead. See docs/models/AsarRec.md for the loss, the augmenter and the design notes.

    NOTE: Only a summary of the paper is available: the score function, the interleaved frame, the greedy rounding,
        the budget as a number of edited rows and all three loss formulas are this plugin's reading of it.
    NOTE: All terms are minimised jointly (no min-max); the fixed budget and the diversity term keep the views
        from collapsing to the identity.
    NOTE: Insert / substitute candidates: Gumbel-top-k of the cosine to the sequence's mean item embedding (static
        CoSeRec: the item most similar to its neighbour), never padding nor any item of the user (train, valid, test).
    NOTE: Mask empties a position (id 0, as CoSeRec / ICLRec's code) instead of a [mask] token.
    NOTE: ``cl_weight`` defaults to 0.01, not CL4SRec's 0.1 (the paper's summary gives no value).
    """

    input_type = InputType.POINTWISE
    TRIM_EVAL_PADDING = True  # both backbones are causal: trailing padding never changes a score

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # hyperparameters
        self.backbone = config["backbone"]
        self.augmentation = config["augmentation"]
        self.hidden_size = config["hidden_size"]
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.dropout_prob = config["dropout_prob"]
        self.initializer_range = config["initializer_range"]
        self.cl_weight = float(config["cl_weight"])
        self.cl_temperature = float(config["cl_temperature"])
        self.static_ratios = {key[: -len("_ratio")]: float(config[key]) for key in STATIC_RATIOS}
        self.perturbation_budget = float(config["perturbation_budget"])
        self.n_candidates = config["n_candidates"]
        self.candidate_temperature = float(config["candidate_temperature"])
        self.augmenter_heads = config["augmenter_heads"]
        self.sinkhorn_iterations = config["sinkhorn_iterations"]
        self.sinkhorn_temperature = float(config["sinkhorn_temperature"])
        self.hard_threshold = float(config["hard_threshold"])
        self.gumbel_scale = float(config["gumbel_scale"])
        self.diversity_weight = float(config["diversity_weight"])
        self.ndcg_weight = float(config["ndcg_weight"])
        self.ndcg_threshold = float(config["ndcg_threshold"])
        self.ndcg_temperature = float(config["ndcg_temperature"])
        self.TARGET_SEQ = target_field(config)
        self.USER_ID = config["USER_ID_FIELD"]
        user_items = getattr(dataset, "user_items", None)
        if user_items is None:
            raise RecBoleDiffusionError(
                "AsarRec needs dataset.user_items (every item of each user, set by "
                "recbole_diffusion.utils.create_dataset) to keep the users' own items out of inserts"
            )
        # buffers (not in the state dict: they are the data's), so that .to(device) moves them once
        indptr, ids = (torch.as_tensor(a) for a in user_items)
        self.register_buffer("user_item_indptr", indptr, persistent=False)
        self.register_buffer("user_item_ids", ids, persistent=False)

        # layers
        d = self.hidden_size
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        if self.backbone == "SASRec":
            self.position_embedding = nn.Embedding(self.max_seq_length, d)
            self.trm_encoder = self._transformer(self.n_layers, self.n_heads)
            self.LayerNorm = nn.LayerNorm(d, eps=self.layer_norm_eps)
            self.dropout = nn.Dropout(self.hidden_dropout_prob)
        else:
            self.emb_dropout = nn.Dropout(self.dropout_prob)
            self.gru_layers = nn.GRU(d, d, num_layers=self.n_layers, bias=False, batch_first=True)
            self.dense = nn.Linear(d, d)
        if self.augmentation == "learned":
            self.augmenter_position = nn.Embedding(self.max_seq_length, d)
            self.augmenter_encoder = self._transformer(1, self.augmenter_heads)
            self.item_row_query = nn.Linear(d, d)
            self.gap_row_query = nn.Linear(d, d)
            self.item_slot_key = nn.Linear(d, d)
            self.candidate_slot_key = nn.Linear(d, d)
            self.identity_bias = nn.Parameter(torch.tensor(0.0))
            self.nothing_logit = nn.Parameter(torch.zeros(2))  # [item row, gap row]

        # initialisation: RecBole's SASRec scheme, and Xavier on the GRU's weights as RecBole's GRU4Rec
        self.apply(self._init_weights)
        if self.backbone == "GRU4Rec":
            for weight in (self.gru_layers.weight_hh_l0, self.gru_layers.weight_ih_l0):
                nn.init.xavier_uniform_(weight)
        if self.augmentation == "learned":
            with torch.no_grad():
                self.identity_bias.fill_(2.0)  # start near the identity: the original sequence
                self.nothing_logit.copy_(torch.tensor([-2.0, 2.0]))  # items kept, gaps empty

    _init_weights = SASRec._init_weights  # RecBole's: normal(0, initializer_range), zero biases

    def _transformer(self, n_layers, n_heads):
        return TransformerEncoder(
            n_layers=n_layers,
            n_heads=n_heads,
            hidden_size=self.hidden_size,
            inner_size=self.inner_size,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attn_dropout_prob=self.attn_dropout_prob,
            hidden_act=self.hidden_act,
            layer_norm_eps=self.layer_norm_eps,
        )

    # ------------------------------------------------------------------ configuration
    @classmethod
    def check_config(cls, config):
        """Fail at start, naming the option, for settings AsarRec cannot run with."""
        checks = OptionChecks(config)
        integer, number, choice = checks.integer, checks.number, checks.choice

        choice("backbone", BACKBONES)
        choice(
            "augmentation", AUGMENTATIONS,
            note="learned: AsarRec; static_cl4srec: crop/mask/reorder; static_coserec: + insert/substitute",
        )
        checks.transformer(heads=("n_heads", "augmenter_heads"), dropouts=("hidden_dropout_prob", "attn_dropout_prob", "dropout_prob"))
        for key in ("n_candidates", "sinkhorn_iterations"):
            integer(key, 1)
        for key in ("cl_weight", "diversity_weight", "ndcg_weight", "gumbel_scale"):
            number(key, 0.0)
        for key in ("cl_temperature", "sinkhorn_temperature", "ndcg_temperature", "candidate_temperature"):
            number(key, 0.0, low_open=True)
        number(
            "perturbation_budget", 0.0, 1.0, low_open=True, high_open=True,
            note="γ, the share of a sequence's positions one view may edit; paper: 0.1",
        )
        for key in ("hard_threshold", "ndcg_threshold", *STATIC_RATIOS):
            number(key, 0.0, 1.0)
        if config["crop_ratio"] == 0:
            raise ConfigError("crop_ratio: crop keeps max(1, ⌊crop_ratio·n⌋) items and needs a rate in (0, 1]; got 0")
        if config["loss_type"] != "CE":
            raise ConfigError(f"loss_type: AsarRec trains its backbone with the full-softmax CE; got {config['loss_type']!r}")
        checks.no_negative_sampling("AsarRec trains without negative samples (full-softmax CE)")

    # ------------------------------------------------------------------ backbone
    def encode(self, item_seq, item_emb=None):
        """Backbone output at every position, [B, L, d]; ``item_emb`` replaces the item
        embeddings of ``item_seq`` (a view's differentiable embeddings)."""
        if item_emb is None:
            item_emb = self.item_embedding(item_seq)
        if self.backbone == "SASRec":
            hidden = sasrec_input(item_emb, self.position_embedding, self.LayerNorm, self.dropout)
            return self.trm_encoder(hidden, self.get_attention_mask(item_seq), output_all_encoded_layers=True)[-1]
        gru_output, _ = self.gru_layers(self.emb_dropout(item_emb))
        return self.dense(gru_output)

    def forward(self, item_seq, item_seq_len):
        return self.gather_indexes(self.encode(item_seq), item_seq_len - 1)

    # ------------------------------------------------------------------ candidates
    def excluded_items(self, users):
        """[B, n_items] bool: padding and every item of each user (never inserted)."""
        indptr = self.user_item_indptr.to(users.device)
        items = self.user_item_ids.to(users.device)
        start, count = indptr[users], indptr[users + 1] - indptr[users]
        row = torch.repeat_interleave(torch.arange(len(users), device=users.device), count)
        offset = torch.arange(int(count.sum()), device=users.device) - torch.repeat_interleave(count.cumsum(0) - count, count)
        excluded = torch.zeros(len(users), self.n_items, dtype=torch.bool, device=users.device)
        excluded[row, items[torch.repeat_interleave(start, count) + offset]] = True
        excluded[:, 0] = True
        return excluded

    def _cosine_to_items(self, queries):
        table = F.normalize(self.item_embedding.weight.detach(), dim=-1)
        return F.normalize(queries, dim=-1) @ table.t()

    def sequence_candidates(self, item_seq, lengths, excluded):
        """k candidates per sequence [B, k]: Gumbel-top-k of the cosine to the mean item embedding."""
        emb = self.item_embedding(item_seq).detach()
        mean = emb.sum(dim=1) / lengths.clamp(min=1).unsqueeze(1)
        logits = self._cosine_to_items(mean).div_(self.candidate_temperature)
        # -log(-log(u)), in place on the [B, n_items] draws (nothing here takes a gradient)
        gumbel = torch.rand_like(logits).clamp_(1e-9, 1 - 1e-9).log_().neg_().log_().neg_()
        return logits.add_(gumbel).masked_fill_(excluded, float("-inf")).topk(self.n_candidates, dim=1).indices

    def anchored_candidates(self, item_seq, anchors, excluded):
        """CoSeRec's new items [B, k]: the item most similar to each anchor's item (0 if unused)."""
        used = anchors != aug.EMPTY
        rows, cols = used.nonzero(as_tuple=True)
        candidates = torch.zeros(anchors.shape, dtype=torch.long, device=anchors.device)
        if len(rows):
            anchor_items = item_seq[rows, anchors[rows, cols]]
            similarity = self._cosine_to_items(self.item_embedding.weight.detach()[anchor_items])
            candidates[rows, cols] = similarity.masked_fill(excluded[rows], float("-inf")).argmax(dim=1)
        return candidates

    # ------------------------------------------------------------------ views
    def static_view(self, item_seq, lengths, excluded):
        """A CL4SRec / CoSeRec random view: (view ids [B, L], view embeddings [B, L, d])."""
        sources, anchors = aug.sample_static(item_seq, lengths, AUGMENTATIONS[self.augmentation], self.static_ratios)
        slots = torch.cat([item_seq, self.anchored_candidates(item_seq, anchors, excluded)], dim=1)
        view = aug.gather_slots(aug.keep_last(sources, item_seq.shape[1]), slots)
        return view, self.item_embedding(view)

    def augmenter_states(self, item_seq):
        """States h [B, L, d] of the augmentation encoder (bidirectional, padding masked)."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        hidden = self.item_embedding(item_seq).detach() + self.augmenter_position(positions)
        mask = self.get_attention_mask(item_seq, bidirectional=True)
        return self.augmenter_encoder(hidden, mask, output_all_encoded_layers=True)[-1]

    def transition_scores(self, states, candidate_emb):
        """Log-scores [B, 2L, L + k + 1] of the interleaved frame (last column: nothing)."""
        batch, width, d = states.shape
        queries = torch.stack([self.gap_row_query(states), self.item_row_query(states)], dim=2).reshape(batch, 2 * width, d)
        keys = torch.cat([self.item_slot_key(states), self.candidate_slot_key(candidate_emb)], dim=1)
        scores = queries @ keys.transpose(1, 2) / math.sqrt(d)
        item_rows = torch.arange(width, device=states.device)
        scores[:, 2 * item_rows + 1, item_rows] += self.identity_bias
        nothing = torch.where(torch.arange(2 * width, device=states.device) % 2 == 1, self.nothing_logit[0], self.nothing_logit[1])
        return torch.cat([scores, nothing.view(1, -1, 1).expand(batch, -1, 1)], dim=2)

    def learned_view(self, item_seq, lengths, states, excluded):
        """One learned view: (view ids [B, L], view embeddings [B, L, d], interleaved M_st
        [B, 2L, L + k], n_edits [B])."""
        width = item_seq.shape[1]
        candidates = self.sequence_candidates(item_seq, lengths, excluded)
        slots = torch.cat([item_seq, candidates], dim=1)
        scores = self.transition_scores(states, self.item_embedding(candidates).detach())
        if self.training and self.gumbel_scale > 0:
            scores = scores + self.gumbel_scale * -torch.log(-torch.log(torch.rand_like(scores).clamp(1e-9, 1 - 1e-9)))
        allowed = aug.interleaved_options(lengths, width, self.n_candidates)
        capped = torch.ones(scores.shape[-1], dtype=torch.bool, device=scores.device)
        capped[-1] = False
        soft = semi_sinkhorn(scores / self.sinkhorn_temperature, self.sinkhorn_iterations, allowed, capped)
        budget = aug.perturbation_budget(lengths, self.perturbation_budget)
        sources, n_edits = aug.budgeted_assignment(soft.detach(), lengths, budget, self.hard_threshold)
        n_slots = slots.shape[1]
        interleaved = straight_through(aug.source_matrix(sources, n_slots), soft[..., :n_slots])
        # compaction and trimming select rows: the final M is a row selection of the interleaved one
        row_index = torch.where(sources != aug.EMPTY, torch.arange(2 * width, device=sources.device), aug.EMPTY)
        rows = aug.keep_last(aug.compact(row_index), width)
        matrix = interleaved.gather(1, rows.clamp(min=0).unsqueeze(-1).expand(-1, -1, n_slots)) * (rows != aug.EMPTY).unsqueeze(-1)
        view = aug.gather_slots(aug.compose(rows, sources), slots)
        return view, matrix @ self.item_embedding(slots), interleaved, n_edits

    # ------------------------------------------------------------------ training
    def soft_ndcg(self, representation, target):
        """Differentiable NDCG of ``target`` [B] among all items, [B]."""
        scores = representation @ self.item_embedding.weight.t()
        above = torch.sigmoid((scores - scores.gather(1, target.unsqueeze(1))) / self.ndcg_temperature)
        above = above.scatter(1, target.unsqueeze(1), 0.0)  # the target is not above itself
        above[:, 0] = 0.0
        return 1.0 / torch.log2(2.0 + above.sum(dim=1))

    def calculate_loss(self, interaction):
        item_seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        hidden = self.encode(item_seq)
        if self.TARGET_SEQ in interaction:  # sequence batch: the next item at every position
            targets = interaction[self.TARGET_SEQ]
            rec_loss = sequence_ce_loss(hidden, targets, self.item_embedding.weight)
            next_item = targets.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
        else:  # RecBole prefix batch
            next_item = interaction[self.POS_ITEM_ID]
            logits = self.gather_indexes(hidden, lengths - 1) @ self.item_embedding.weight.t()
            rec_loss = F.cross_entropy(logits, next_item)

        excluded = self.excluded_items(interaction[self.USER_ID])
        if self.augmentation != "learned":
            views = [self.static_view(item_seq, lengths, excluded) for _ in range(2)]
        else:
            states = self.augmenter_states(item_seq)
            views = [self.learned_view(item_seq, lengths, states, excluded) for _ in range(2)]
        representations = [
            self.gather_indexes(self.encode(view[0], view[1]), aug.view_lengths(view[0]).clamp(min=1) - 1) for view in views
        ]
        loss = rec_loss + self.cl_weight * info_nce(*representations, temperature=self.cl_temperature)
        if self.augmentation == "learned":
            overlap = (views[0][2] * views[1][2]).sum(dim=(1, 2)) / lengths.clamp(min=1)
            original = self.soft_ndcg(self.gather_indexes(hidden, lengths - 1), next_item).detach()
            shortfall = sum(F.relu(self.ndcg_threshold * original - self.soft_ndcg(z, next_item)) for z in representations)
            loss = loss + self.diversity_weight * overlap.mean() + self.ndcg_weight * shortfall.mean()
        return loss

    # ------------------------------------------------------------------ evaluation
    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (seq_output * self.item_embedding(interaction[self.ITEM_ID])).sum(dim=-1)

    def full_sort_predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_embedding.weight.t()
