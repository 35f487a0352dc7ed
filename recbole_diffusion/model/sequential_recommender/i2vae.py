r"""
i2VAE
################################################

Reference:
    Xuying Ning, Wujiang Xu, Tianxin Wei, Xiaolei Liu. "i²VAE: Interest Information Augmentation
    with Variational Regularizers for Cross-Domain Sequential Recommendation." UAI 2025 (arXiv 2405.20710).

Reference code:
    https://github.com/WujiangXu/IM-VAE

Data, split and evaluation: docs/cross-domain.md (a two-domain dataset with ``domain_field``).
"""

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.general_recommender.lightgcn import LightGCN
from recbole.model.layers import TransformerEncoder
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import InputType
from torch import nn

from recbole_diffusion.data.cross_domain import TARGET_DOMAIN, domain_list_fields
from recbole_diffusion.distributed import broadcast_object, is_distributed, rank_and_world
from recbole_diffusion.layers import GaussianEncoder, bounded_log_variance, causal_padding_mask, gaussian_kl, reparameterize, sasrec_input
from recbole_diffusion.errors import ConfigError, OptionChecks

__all__ = ["i2VAE"]

_DENOISE_OFFSET = 0.8  # w = exp(a·len/L) − 0.8 (authors' code)
_LENGTH_BUCKETS = 4  # sequences are encoded in this many groups of similar length (see encode_sequence)
# the authors' priors: raw log σ 1.0 through the σ map (σ = exp(0.1 + 0.9·softplus(0.4)) ≈ 2.51)
_PRIOR_RAW_LOG_SIGMA = 1.0


class _TrainGraph:
    """What RecBole's LightGCN reads of a dataset: the id counts and the user-item matrix, here
    of the training interactions only."""

    def __init__(self, config, users, items, n_users, n_items):
        self.uid_field, self.iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
        self.users, self.items = users, items
        self.n_users, self.n_items = n_users, n_items

    def num(self, field):
        return self.n_users if field == self.uid_field else self.n_items

    def inter_matrix(self, form="coo", value_field=None):
        values = np.ones(len(self.users), dtype=np.float32)
        matrix = sp.coo_matrix((values, (self.users, self.items)), shape=(self.n_users, self.n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix if form == "coo" else matrix.tocsr()


def fit_pseudo_items(config, train_interactions, n_users, n_items, n_pseudo, settings, generator):
    """The pseudo-sequence generator: RecBole's LightGCN fitted (BPR) on the training interactions
    of both domains; each user's ``n_pseudo`` best-scored items of each domain that are not among
    its training items. Candidates are the items with training interactions in that domain, so
    nothing about valid or test interactions reaches the output. Returns a LongTensor
    [n_users, 2, n_pseudo] (0 = none: users without training interactions, whose LightGCN
    embedding was never trained, get no pseudo-items)."""
    users, items, domains = (np.asarray(a, dtype=np.int64) for a in train_interactions)
    pseudo = torch.zeros(n_users, 2, n_pseudo, dtype=torch.long)
    if n_pseudo == 0 or len(users) == 0:
        return pseudo
    domain_items = torch.zeros(2, n_items, dtype=torch.bool)
    domain_items[torch.from_numpy(domains), torch.from_numpy(items)] = True
    lightgcn_config = {
        "USER_ID_FIELD": config["USER_ID_FIELD"], "ITEM_ID_FIELD": config["ITEM_ID_FIELD"], "NEG_PREFIX": config["NEG_PREFIX"],
        "device": torch.device("cpu"), "embedding_size": settings["embedding_size"], "n_layers": settings["n_layers"],
        "reg_weight": settings["reg_weight"], "require_pow": False,
    }
    graph = LightGCN(lightgcn_config, _TrainGraph(config, users, items, n_users, n_items))
    # same matrix, several times faster products on CPU than RecBole's COO tensor
    graph.norm_adj_matrix = graph.norm_adj_matrix.coalesce().to_sparse_csr()
    optimizer = torch.optim.Adam(graph.parameters(), lr=settings["learning_rate"])
    uid, iid, neg = lightgcn_config["USER_ID_FIELD"], lightgcn_config["ITEM_ID_FIELD"], graph.NEG_ITEM_ID
    pairs_u, pairs_i = torch.from_numpy(users), torch.from_numpy(items)
    graph.train()
    for _ in range(settings["epochs"]):
        order = torch.randperm(len(users), generator=generator)
        for start in range(0, len(order), settings["batch_size"]):
            batch = order[start : start + settings["batch_size"]]
            negatives = torch.randint(1, n_items, (len(batch),), generator=generator)
            optimizer.zero_grad()
            graph.calculate_loss({uid: pairs_u[batch], iid: pairs_i[batch], neg: negatives}).backward()
            optimizer.step()
    graph.eval()
    with torch.no_grad():
        user_e, item_e = graph.forward()
        known = torch.zeros(n_users, dtype=torch.bool)
        known[pairs_u] = True
        seen = torch.sparse_coo_tensor(torch.stack([pairs_u, pairs_i]), torch.ones(len(users)), (n_users, n_items)).coalesce()
        seen_index = seen.indices()
        for start in range(0, n_users, 1024):
            rows = torch.arange(start, min(start + 1024, n_users))
            scores = user_e[rows] @ item_e.t()
            in_chunk = (seen_index[0] >= start) & (seen_index[0] < start + len(rows))
            scores[seen_index[0, in_chunk] - start, seen_index[1, in_chunk]] = -torch.inf  # own items
            for domain in range(2):
                domain_scores = scores.masked_fill(~domain_items[domain], -torch.inf)
                k = min(n_pseudo, int(domain_items[domain].sum()))
                top = domain_scores.topk(k, dim=1)
                chosen = torch.where(torch.isfinite(top.values), top.indices, torch.zeros_like(top.indices))
                pseudo[rows, domain, :k] = chosen
        pseudo[~known] = 0
    return pseudo


def interleave(real, pseudo):
    """[B, L] real items (right-padded) and [B, P] pseudo-items -> the augmented sequence
    r1, p1, r2, p2, ... with padding moved to the end (right-padded, width of its longest row)."""
    width = max(real.size(1), pseudo.size(1))
    pairs = torch.stack([F.pad(real, (0, width - real.size(1))), F.pad(pseudo, (0, width - pseudo.size(1)))], dim=2)
    pairs = pairs.reshape(real.size(0), 2 * width)
    positions = torch.arange(2 * width, device=real.device)
    order = ((pairs == 0).long() * 2 * width + positions).argsort(dim=1)
    merged = pairs.gather(1, order)
    return merged[:, : max(int((merged > 0).sum(1).max()), 1)]


def masked_mean(states, mask):
    """Mean of ``states`` [B, L, d] over the positions where ``mask`` [B, L] is True (0 if none)."""
    mask = mask.unsqueeze(-1).float()
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class i2VAE(SequentialRecommender):
    r"""i²VAE is a VAE over two domains' sequences, with pseudo-sequence augmentation and three variational
    regularizers (denoising, cross-domain, disentangling), for cold-start and long-tailed users. For a target in
    domain d, a user vector decoded from d's own, augmented and cross-domain latents scores d's items; users with
    no history in d take the single-domain inference network r(z_t | other) at evaluation.
    See docs/models/i2VAE.md for the latents, the loss and the design notes.

    NOTE: The disentangling term is explicit, by the paper's decomposition of −I(Z^d; Z_t):
        L_dis = CE(W'_d[dec(z^d); dec_t(z_t)]) + KL(q(z^d)‖p_d) + KL(q(z_t)‖r); the authors' code has none.
    NOTE: Items are scored by a dot product and trained with CE over the target domain's items
        (the authors: σ(MLP([u; e_i])) and BCE with one sampled negative).
    NOTE: ``posterior_scale: clamped`` (default) clamps log σ² to [-10, 10] with N(0, I) priors;
        ``authors`` is their bounded σ and learnable priors.
    NOTE: ``kl_weight`` (β) defaults to 0.001, not the authors' 1, which collapses the posterior
        (every user gets the same ranking).
    NOTE: Domain encoders are RecBole's TransformerEncoder with positions and a padding mask,
        mean-pooled over real positions; the cross-attention takes keys and values from e.
    NOTE: The pseudo-sequence generator is a LightGCN fitted on the training interactions only,
        before the first epoch (i2VAETrainer); its items exclude the user's training items.
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
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.n_cross_heads = config["n_cross_heads"]
        self.input_dropout_prob = config["input_dropout_prob"]
        self.kl_weight = config["kl_weight"]
        self.denoise_weight = config["denoise_weight"]
        self.cross_domain_weight = config["cross_domain_weight"]
        self.disentangle_weight = config["disentangle_weight"]
        self.length_weight_a = config["length_weight_a"]
        self.n_pseudo_items = config["n_pseudo_items"]
        self.posterior_scale = config["posterior_scale"]
        self.psg_settings = {
            "embedding_size": config["psg_embedding_size"], "n_layers": config["psg_n_layers"],
            "epochs": config["psg_epochs"], "learning_rate": config["psg_learning_rate"],
            "batch_size": config["psg_batch_size"], "reg_weight": config["psg_reg_weight"],
        }
        self.initializer_range = config["initializer_range"]
        self.DOMAIN_SEQ, self.DOMAIN_LEN = zip(*domain_list_fields(config))
        self.TARGET_DOMAIN = TARGET_DOMAIN

        # layers
        d = self.hidden_size
        self.item_embedding = nn.Embedding(self.n_items, d, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length + self.n_pseudo_items, d)
        self.input_norm = nn.LayerNorm(d, eps=self.layer_norm_eps)
        self.input_dropout = nn.Dropout(self.hidden_dropout_prob)
        self.sequence_encoders = nn.ModuleList(
            TransformerEncoder(
                n_layers=self.n_layers, n_heads=self.n_heads, hidden_size=d, inner_size=self.inner_size,
                hidden_dropout_prob=self.hidden_dropout_prob, attn_dropout_prob=self.attn_dropout_prob,
                hidden_act=self.hidden_act, layer_norm_eps=self.layer_norm_eps,
            )
            for _ in range(2)
        )

        def per_domain(make):
            return nn.ModuleList(make() for _ in range(2))

        def decoder():
            return nn.Sequential(nn.Linear(d, 2 * d), nn.Tanh(), nn.Linear(2 * d, d))

        # index = the target domain d whose prediction the module serves
        log_variance = bounded_log_variance if self.posterior_scale == "authors" else None

        def gaussian_head():
            return GaussianEncoder(d, d, input_dropout=self.input_dropout_prob, log_variance=log_variance)

        self.specific_encoders = per_domain(gaussian_head)
        self.transfer_attention = per_domain(
            lambda: nn.MultiheadAttention(d, self.n_cross_heads, dropout=self.attn_dropout_prob, batch_first=True)
        )
        self.transfer_norm = per_domain(lambda: nn.LayerNorm(d, eps=self.layer_norm_eps))
        self.transfer_encoders = per_domain(gaussian_head)
        self.transfer_priors = per_domain(gaussian_head)
        self.specific_decoders = per_domain(decoder)
        self.transfer_decoders = per_domain(decoder)
        self.user_projections = per_domain(lambda: nn.Linear(3 * d, d))
        self.joint_projections = per_domain(lambda: nn.Linear(2 * d, d))
        if self.posterior_scale == "authors":
            # the authors' learnable prior N(μ_p, σ(r_p)) of z^d and z_a^d, per domain
            self.prior_mu = nn.Parameter(torch.zeros(2))
            self.prior_raw_log_sigma = nn.Parameter(torch.full((2,), _PRIOR_RAW_LOG_SIGMA))
        self.register_buffer("domain_items", torch.from_numpy(dataset.domain_items.copy()))
        # each domain's item ids, and every item's position among them (-1: not in the domain)
        positions = torch.full(self.domain_items.shape, -1, dtype=torch.long)
        for domain in range(2):
            ids = torch.nonzero(self.domain_items[domain]).squeeze(1)
            self.register_buffer(f"domain_item_ids_{domain}", ids)
            positions[domain, ids] = torch.arange(len(ids))
        self.register_buffer("domain_item_positions", positions)

        # parameters initialization
        self.apply(self._init_weights)

        # the pseudo-sequence generator's output, filled by fit_pseudo_sequences() before training
        # (i2VAETrainer calls it) and restored with the rest of a checkpoint
        self.register_buffer("pseudo_items", torch.zeros(dataset.num(self.USER_ID), 2, self.n_pseudo_items, dtype=torch.long))
        self.register_buffer("pseudo_items_fitted", torch.tensor(False))
        self._psg_inputs = (config, dataset.train_interactions, int(config["seed"]))

    def fit_pseudo_sequences(self):
        """Fit the pseudo-sequence generator on the training interactions and keep each user's
        pseudo-items. Its random draws come from its own seeded streams (a generator for the BPR
        batches, a forked global stream for LightGCN's initialisation), so the rest of training
        draws the same numbers whether or not it ran; a restored checkpoint has the items already.
        Under torch.distributed the first process fits and sends the items to the others (each rank
        would otherwise fit the same items from the same seed, all of them on the CPU at once)."""
        pseudo, error = None, None
        if rank_and_world()[0] == 0:
            config, train_interactions, seed = self._psg_inputs
            generator = torch.Generator().manual_seed(seed)
            # the CPU stream only: torch.manual_seed would also reseed every GPU's stream (and fork_rng with
            # devices=[] restores none of them), giving every rank of a multi-GPU run the same GPU stream
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(seed)
                    pseudo = fit_pseudo_items(
                        config, train_interactions, self.pseudo_items.size(0), self.n_items, self.n_pseudo_items, self.psg_settings,
                        generator,
                    )
            except Exception as exc:
                if not is_distributed():
                    raise
                error = f"{type(exc).__name__}: {exc}"  # sent, so that the other ranks stop too instead of waiting
        pseudo, error = broadcast_object((pseudo, error))
        if error is not None:
            raise RuntimeError(f"i2VAE: fitting the pseudo-sequence generator failed on rank 0: {error}")
        self.pseudo_items.copy_(pseudo.to(self.pseudo_items.device))
        self.pseudo_items_fitted.fill_(True)

    @classmethod
    def check_config(cls, config):
        if config["domain_field"] is None:
            raise ConfigError(
                "domain_field: i2VAE is a cross-domain model and needs a two-domain dataset whose interactions carry "
                "a domain token; set domain_field to that column (properties/dataset/cloth-sport.yaml sets "
                "domain_field: domain). Per-domain files (dataset_domain) have only one domain"
            )
        if config["train_mode"] != "prefix":
            raise ConfigError("train_mode: i2VAE trains one sample per target (train_mode=prefix); its latents summarise whole sequences")
        checks = OptionChecks(config)
        for key in ("kl_weight", "denoise_weight", "cross_domain_weight", "disentangle_weight", "length_weight_a", "psg_reg_weight"):
            checks.number(key, 0.0)
        checks.transformer(heads=("n_heads", "n_cross_heads"), dropouts=("hidden_dropout_prob", "attn_dropout_prob", "input_dropout_prob"))
        checks.number("psg_learning_rate", 0.0, low_open=True)
        checks.choice(
            "posterior_scale", ("clamped", "authors"),
            note="clamped: log σ² in [-10, 10], N(0, I) priors; authors: σ = exp(0.1 + 0.9·softplus(min(r, 0.4))) with the authors' priors",
        )
        for key in ("n_pseudo_items", "psg_epochs"):
            checks.integer(key, 0)
        for key in ("psg_n_layers", "psg_embedding_size", "psg_batch_size"):
            checks.integer(key, 1)

    _init_weights = SASRec._init_weights  # RecBole's: normal(0, initializer_range), zero biases

    # ------------------------------------------------------------------ encoders
    def encode_sequence(self, domain, item_seq):
        """States [B, W, d] of domain ``domain``'s encoder, the real-position mask [B, W] (W: the
        longest row), the mean state [B, d] (0 for a row without items).

        Sequences are right-padded and a real position attends only to earlier real ones (causal
        padding mask), so its state does not depend on how much padding follows. Rows are therefore
        encoded in ``_LENGTH_BUCKETS`` groups of similar length, each cut to its own longest row
        (most histories are short), and rows without items are skipped; states of padding
        positions, never read (masked means, masked keys), are 0.
        """
        mask = item_seq > 0
        lengths = mask.sum(1)
        width = max(int(lengths.max()), 1)
        item_seq, mask = item_seq[:, :width], mask[:, :width]
        present = torch.nonzero(lengths > 0).squeeze(1)
        states = self.item_embedding.weight.new_zeros(*item_seq.shape, self.hidden_size)
        if len(present) == 0:
            return states, mask, states[:, 0]
        order = present[lengths[present].argsort()]
        groups, encoded = [], []
        for rows in order.tensor_split(min(_LENGTH_BUCKETS, len(order))):
            group_width = int(lengths[rows[-1]])
            group_seq = item_seq[rows, :group_width]
            hidden = sasrec_input(self.item_embedding(group_seq), self.position_embedding, self.input_norm, self.input_dropout)
            group_states = self.sequence_encoders[domain](hidden, causal_padding_mask(group_seq), output_all_encoded_layers=True)[-1]
            groups.append(rows)
            encoded.append(F.pad(group_states, (0, 0, 0, width - group_width)))
        states = states.index_copy(0, torch.cat(groups), torch.cat(encoded))
        return states, mask, masked_mean(states, mask)

    def latents(self, interaction, domain):
        """The Gaussian posteriors of the rows whose target is in ``domain`` (all rows given)."""
        other = 1 - domain
        own_seq = interaction[self.DOMAIN_SEQ[domain]]
        other_seq = interaction[self.DOMAIN_SEQ[other]]
        own_states, own_mask, own_mean = self.encode_sequence(domain, own_seq)
        other_states, other_mask, other_mean = self.encode_sequence(other, other_seq)
        if not bool(self.pseudo_items_fitted):
            raise RuntimeError("i2VAE: the pseudo-items are not fitted: call fit_pseudo_sequences() first (i2VAETrainer does)")
        pseudo = self.pseudo_items[interaction[self.USER_ID], domain]
        _, _, augmented_mean = self.encode_sequence(domain, interleave(own_seq, pseudo))

        # d's states reading e's: queries from the own sequence, keys and values from the other one;
        # zero for rows missing either side
        transfer_input = torch.zeros_like(own_mean)
        both = torch.nonzero(own_mask.any(1) & other_mask.any(1)).squeeze(1)
        if len(both):
            keys = other_states[both]
            key_padding = torch.zeros(keys.shape[:2], device=own_seq.device).masked_fill(~other_mask[both], -10000.0)
            read, _ = self.transfer_attention[domain](own_states[both], keys, keys, key_padding_mask=key_padding, need_weights=False)
            transfer_input = transfer_input.index_copy(0, both, masked_mean(self.transfer_norm[domain](read), own_mask[both]))
        return {
            "specific": self.specific_encoders[domain](own_mean),
            "augmented": self.specific_encoders[domain](augmented_mean),
            "transfer": self.transfer_encoders[domain](transfer_input),
            "transfer_prior": self.transfer_priors[domain](other_mean),
            "own_length": interaction[self.DOMAIN_LEN[domain]],
        }

    def user_vectors(self, domain, latents, cold_start=None):
        """(user vector, disentangling-head vector, sampled latents) from the posteriors; rows in
        ``cold_start`` take the single-domain network r(z_t | other) instead of q(z_t | own, other)."""
        sample = self.training
        transfer_mu, transfer_logvar = latents["transfer"]
        if cold_start is not None:
            prior_mu, prior_logvar = latents["transfer_prior"]
            transfer_mu = torch.where(cold_start.unsqueeze(1), prior_mu, transfer_mu)
            transfer_logvar = torch.where(cold_start.unsqueeze(1), prior_logvar, transfer_logvar)
        z = reparameterize(*latents["specific"], sample)
        z_a = reparameterize(*latents["augmented"], sample)
        z_t = reparameterize(transfer_mu, transfer_logvar, sample)
        specific = self.specific_decoders[domain](z)
        transfer = self.transfer_decoders[domain](z_t)
        augmented = self.specific_decoders[domain](z_a)
        user = self.user_projections[domain](torch.cat([specific, transfer, augmented], dim=-1))
        joint = self.joint_projections[domain](torch.cat([specific, transfer], dim=-1))
        return user, joint

    def domain_item_ids(self, domain):
        return getattr(self, f"domain_item_ids_{domain}")

    def domain_logits(self, domain, vectors):
        """Scores [B, n_d] of the target domain's items (in the order of ``domain_item_ids``)."""
        return vectors @ self.item_embedding(self.domain_item_ids(domain)).t()

    def denoise_length_weight(self, own_length):
        """w = exp(a·len/L) − 0.8: longer real histories pull z_a harder towards z."""
        length = own_length.clamp(max=self.max_seq_length).float()
        return torch.exp(self.length_weight_a * length / self.max_seq_length) - _DENOISE_OFFSET

    def specific_prior(self, domain):
        """(μ_p, log σ_p²) of the prior of z^d and z_a^d: the authors' learnable scalars, or
        ``(None, None)`` (N(0, I)) with ``posterior_scale: clamped``."""
        if self.posterior_scale == "clamped":
            return None, None  # N(0, I)
        return self.prior_mu[domain], bounded_log_variance(self.prior_raw_log_sigma[domain])

    def transfer_prior(self):
        """(μ, log σ²) of the fixed prior of z_t: the authors' "standard" N(0, σ(1)), or N(0, I)."""
        if self.posterior_scale == "clamped":
            return None, None  # N(0, I)
        logvar = bounded_log_variance(self.prior_raw_log_sigma.new_tensor(_PRIOR_RAW_LOG_SIGMA))
        return torch.zeros_like(logvar), logvar

    def domain_parts(self, interaction):
        """``(domain, rows, latents of those rows)`` for each target domain present in the batch."""
        target_domain = interaction[self.TARGET_DOMAIN]
        for domain in range(2):
            rows = torch.nonzero(target_domain == domain).squeeze(1)
            if len(rows):
                yield domain, rows, self.latents(interaction[rows], domain)

    def loss_terms(self, interaction):
        """Per-sample loss terms (each [B]) over the whole batch, keyed by name."""
        target = interaction[self.POS_ITEM_ID]
        terms = {}
        for domain, rows, latents in self.domain_parts(interaction):
            user, joint = self.user_vectors(domain, latents)
            specific, augmented, transfer, prior = (latents[k] for k in ("specific", "augmented", "transfer", "transfer_prior"))
            specific_prior = self.specific_prior(domain)
            kl_specific, kl_transfer_r = gaussian_kl(*specific, *specific_prior), gaussian_kl(*transfer, *prior)
            logits = self.domain_logits(domain, torch.cat([user, joint]))  # one product for both heads
            labels = self.domain_item_positions[domain, target[rows]].repeat(2)
            ce = F.cross_entropy(logits, labels, reduction="none").view(2, -1)
            values = {
                "recommendation": ce[0],
                "kl": kl_specific + gaussian_kl(*augmented, *specific_prior) + gaussian_kl(*transfer, *self.transfer_prior()),
                "denoising": self.denoise_length_weight(latents["own_length"]) * gaussian_kl(*augmented, *specific),
                "cross_domain": kl_transfer_r,
                "disentangling": ce[1] + kl_specific + kl_transfer_r,
            }
            for name, value in values.items():
                terms.setdefault(name, torch.zeros(len(target), device=target.device))[rows] = value
        return terms

    def calculate_loss(self, interaction):
        terms = self.loss_terms(interaction)
        loss = (
            terms["recommendation"]
            + self.kl_weight * terms["kl"]
            + self.denoise_weight * terms["denoising"]
            + self.cross_domain_weight * terms["cross_domain"]
            + self.disentangle_weight * terms["disentangling"]
        )
        return loss.mean()

    def forward(self, interaction):
        """The user vector [B, d] of each row in its target domain (both domains' histories and the
        user's pseudo-items are read, so the whole interaction is the input)."""
        users = None
        for domain, rows, latents in self.domain_parts(interaction):
            cold_start = latents["own_length"] == 0  # no history in the target domain: r(z_t | other)
            user, _ = self.user_vectors(domain, latents, cold_start=cold_start)
            if users is None:
                users = user.new_zeros(len(interaction[self.TARGET_DOMAIN]), user.size(1))
            users[rows] = user
        return users

    def full_sort_predict(self, interaction):
        target_domain = interaction[self.TARGET_DOMAIN]
        users = self.forward(interaction)
        scores = torch.full((len(target_domain), self.n_items), -torch.inf, device=target_domain.device)
        for domain in range(2):
            rows = torch.nonzero(target_domain == domain).squeeze(1)
            if len(rows):
                scores[rows.unsqueeze(1), self.domain_item_ids(domain).unsqueeze(0)] = self.domain_logits(domain, users[rows])
        return scores

    def predict(self, interaction):
        scores = self.full_sort_predict(interaction)
        return scores.gather(1, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)
