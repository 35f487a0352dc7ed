"""Evaluation: per-user target ranks, metrics on user groups, and the full-sort loaders.

Everything an evaluation adds to RecBole's lives here:

- collectors that remember each evaluated row's user and target rank (:class:`GroupCollector`,
  :class:`CrossDomainCollector`), from which the trainer reports per-user ranks;
- metrics on sparse users (option ``sparse_users``) and, on a cross-domain dataset, per target
  domain and user group (cold-start, long-tailed);
- the full-sort loader batched by history length with padding trimmed
  (:class:`TrimmedFullSortEvalDataLoader`) and the cross-domain candidate restriction
  (:func:`domain_candidate_loader`).

Sparse users
------------
Metrics on sparse users, next to all users, for every model (option ``sparse_users``).

``sparse_users: [3, 5]`` adds, to every full-sort evaluation result, each configured metric
computed again on the users with at most 3 (and at most 5) *training* interactions, plus the
number of such users, under keys like ``ndcg@10 (history<=3)`` and ``users (history<=3)``.

The group of a user is fixed by the length of its training sequence (RecBole's train split),
so the valid and the test evaluation look at the same users, and no model-specific input decides
who is sparse. On the 5-core amazon-beauty every user has at least 3 training interactions, so
``history<=3`` is the users with exactly 5 interactions.

Note the difference to ADARec's released Table 2, which truncates *every* user's history to its
last N items and trains and tests on that truncated data: here nothing is truncated, the same
trained model is scored on the naturally short users.

The metrics are RecBole's own (``recbole.evaluator.Evaluator``) applied to the rows of the
collected ``rec.topk`` matrix that belong to the group, so they are exactly what RecBole would
report on that subset of users.

Trimmed full-sort loader
------------------------
Full-sort evaluation batched by history length, with padding trimmed.

RecBole's full-sort evaluation of a sequential model runs the encoder over all
``MAX_ITEM_LIST_LENGTH`` positions of every user, although most histories are short
(amazon-beauty: median 6 of 50). Profiled here, the encoder over that padding is nearly all of an
evaluation's time. This loader orders the valid/test users by history length and cuts each
batch's list fields to the batch's longest history. Metrics are per-user averages, so the order
of users does not change them (tested).

Only for models whose output for a user cannot depend on trailing padding: causal encoders read
at position ``item_length - 1`` (RecBole's SASRec and GRU4Rec, listed here), and this plugin's
models that set the class attribute ``TRIM_EVAL_PADDING = True``. Every other model keeps
RecBole's loader unchanged.
"""

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator import Collector

from recbole_diffusion.data.cross_domain import DOMAIN_HISTORY, TARGET_DOMAIN
from recbole_diffusion.errors import ConfigError

ROW_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label")


def sparse_user_thresholds(config):
    """The configured history thresholds, checked: a list of distinct positive ints."""
    value = config["sparse_users"]
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ConfigError(f"sparse_users must be a list of positive integers (history lengths), e.g. [3, 5]; got {value!r}")
    if value and any(mode != "full" for mode in config["eval_args"]["mode"].values()):
        raise ConfigError("sparse_users needs full-sort evaluation (eval_args mode: full)")
    return sorted(set(value))


def train_history_lengths(train_dataset, n_users):
    """Number of training interactions of every user, indexed by user id (a LongTensor).

    RecBole's sequential train split holds one sample per training target, and every training
    interaction but a user's first is a target, so a user with ``n`` samples has ``n + 1``
    training interactions. A user with no sample has one (or none) and gets 1.
    """
    users = train_dataset.inter_feat[train_dataset.uid_field].long()
    return torch.bincount(users, minlength=n_users) + 1


def group_key(key, threshold):
    return f"{key} (history<={threshold})"


class GroupCollector(Collector):
    """RecBole's collector that also remembers which user each collected row belongs to, and the
    1-based rank of each row's target in RecBole's own ranking (see :func:`target_ranks`)."""

    def __init__(self, config):
        super().__init__(config)
        self.uid_field = config["USER_ID_FIELD"]
        self._users, self._ranks = [], []
        self.last_users = None
        self.last_ranks = None
        self.last_struct = None

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        self._users.append(interaction[self.uid_field].cpu())
        # None marks a batch whose rows are not one user with one target each (a sampled
        # evaluation's candidate rows, several test items per user): no ranks for that evaluation
        ranks = None
        if len(interaction) == scores_tensor.size(0):
            ranks = target_ranks(scores_tensor, positive_u, positive_i, max(self.topk))
        self._ranks.append(ranks)

    def get_data_struct(self):
        struct = super().get_data_struct()
        self.last_users = torch.cat(self._users) if self._users else torch.zeros(0, dtype=torch.long)
        complete = bool(self._ranks) and all(r is not None for r in self._ranks)
        self.last_ranks = torch.cat(self._ranks) if complete else None
        self.last_struct = struct
        self._users, self._ranks = [], []
        return struct


def target_ranks(scores, positive_u, positive_i, max_k):
    """The 1-based rank of each row's target among the row's scores, as RecBole's full-sort
    metrics see it, or None unless every row has exactly one target.

    Within the top ``max_k`` (the largest ``topk``) the rank is the target's position in
    ``torch.topk(scores, max_k)``, the very call RecBole's collector makes, so ties are broken
    as in RecBole's HR and NDCG. Below it, the rank is one more than the number of items scored
    higher (at least ``max_k + 1``): the rank the target would have with ties in its favour,
    which no metric at k <= ``max_k`` can tell from RecBole's.
    """
    n_rows = scores.size(0)
    if positive_u.numel() != n_rows or not bool((torch.bincount(positive_u, minlength=n_rows) == 1).all()):
        return None
    target = torch.empty(n_rows, dtype=torch.long, device=positive_i.device)
    target[positive_u] = positive_i
    target = target.to(scores.device).unsqueeze(1)
    top = torch.topk(scores, max_k, dim=-1)[1] == target
    higher = (scores > scores.gather(1, target)).sum(dim=1) + 1
    ranks = torch.where(top.any(dim=1), top.int().argmax(dim=1) + 1, higher.clamp(min=max_k + 1))
    return ranks.cpu()


def evaluated_rows(collector, eval_data):
    """The rows of the last evaluation, for per-user statistics (a paired bootstrap between two
    models scored on the same users): ``{"user": raw user tokens, "rank": 1-based target ranks}``
    (numpy arrays in collection order), with ``"domain"`` (each row's target-domain name) on a
    cross-domain dataset. None when the collector kept no ranks (not a full-sort evaluation with
    one target per row)."""
    ranks = getattr(collector, "last_ranks", None)
    if ranks is None or len(ranks) != len(collector.last_users):
        return None
    dataset = eval_data._dataset
    rows = {
        "user": dataset.field2id_token[dataset.uid_field][collector.last_users.numpy()],
        "rank": ranks.numpy(),
    }
    domains = getattr(collector, "last_rows", None)
    if domains is not None:
        names = list(dataset.domain_display_names)
        rows["domain"] = [names[int(d)] for d in domains[TARGET_DOMAIN]]
    return rows


def group_results(evaluator, struct, users, history_length, thresholds):
    """RecBole's metrics on the users of each sparse group, as extra result keys."""
    extra = {}
    n_rows = len(users)
    user_history = history_length[users]
    for threshold in thresholds:
        rows = user_history <= threshold
        extra[group_key("users", threshold)] = int(rows.sum())
        if not rows.any():
            continue
        for key, value in subset_results(evaluator, struct, rows, n_rows).items():
            extra[group_key(key, threshold)] = value
    return extra


def subset_results(evaluator, struct, rows, n_rows):
    """RecBole's metrics on the collected rows selected by the boolean mask ``rows``."""
    subset = type(struct)()
    for key, value in struct._data_dict.items():
        if key in ROW_KEYS and torch.is_tensor(value) and value.size(0) == n_rows:
            value = value[rows]
        subset.set(key, value)
    return evaluator.evaluate(subset)


# ----------------------------------------------------------------------------- cross-domain groups
# On a cross-domain dataset (option domain_field or dataset_domain, docs/cross-domain.md) every
# evaluation also reports each metric per target domain and user group, under keys like
# ``ndcg@10 (cloth, cold-start)`` and ``users (cloth, cold-start)``. A sample's group is fixed by
# its number of target-domain history items, so every model on the two-domain file or on a
# per-domain file is scored on the same users.
CROSS_DOMAIN_GROUPS = ("all", "cold-start", "long-tailed")


def cross_domain_long_tail(config):
    """``long_tail_length`` of a cross-domain dataset (checked), or ``None`` for other data."""
    options = config.plugin_options["cross_domain"]
    return None if options is None else options["long_tail_length"]


def cross_domain_group_key(key, domain, group):
    return f"{key} ({domain}, {group})"


class CrossDomainCollector(GroupCollector):
    """:class:`GroupCollector` that also remembers each row's target domain and its number of
    target-domain history items."""

    def __init__(self, config):
        super().__init__(config)
        self.row_fields = (TARGET_DOMAIN, DOMAIN_HISTORY)
        self._rows = {name: [] for name in self.row_fields}
        self.last_rows = None

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        for name in self.row_fields:
            self._rows[name].append(interaction[name].cpu())

    def get_data_struct(self):
        struct = super().get_data_struct()
        self.last_rows = {name: torch.cat(values) if values else torch.zeros(0, dtype=torch.long) for name, values in self._rows.items()}
        self._rows = {name: [] for name in self.row_fields}
        return struct


def cross_domain_results(evaluator, collector, names, long_tail_length):
    """RecBole's metrics per target domain (``names`` by domain index) and per group of
    ``CROSS_DOMAIN_GROUPS``, from the last evaluation a :class:`CrossDomainCollector` collected."""
    domains, history = collector.last_rows[TARGET_DOMAIN], collector.last_rows[DOMAIN_HISTORY]
    extra = {}
    for index, name in enumerate(names):
        in_domain = domains == index
        groups = {"all": in_domain, "cold-start": in_domain & (history == 0),
                  "long-tailed": in_domain & (history >= 1) & (history <= long_tail_length)}
        for group in CROSS_DOMAIN_GROUPS:
            rows = groups[group]
            extra[cross_domain_group_key("users", name, group)] = int(rows.sum())
            if not rows.any():
                continue
            for key, value in subset_results(evaluator, collector.last_struct, rows, len(domains)).items():
                extra[cross_domain_group_key(key, name, group)] = value
    return extra


# ----------------------------------------------------------------------------- trimmed full-sort loader


TRIM_SAFE_BUILTINS = ("SASRec", "GRU4Rec")


def trims_eval_padding(config, model_class, phase):
    """Whether ``phase``'s evaluation of ``model_class`` may use the trimmed loader."""
    if config["eval_args"]["mode"][phase] != "full" or model_class.type.name != "SEQUENTIAL":
        return False
    if getattr(model_class, "TRIM_EVAL_PADDING", False):
        return True
    return model_class.__module__.startswith("recbole.") and model_class.__name__ in TRIM_SAFE_BUILTINS


class TrimmedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's sequential full-sort loader, users ordered by history length, padding trimmed."""

    def __init__(self, config, dataset, sampler, shuffle=False):
        self.length_field = config["ITEM_LIST_LENGTH_FIELD"]
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        dataset.sort(by=self.length_field, ascending=True)
        super().__init__(config, dataset, sampler, shuffle=False)

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        width = max(int(interaction[self.length_field].max()), 1)
        for field, value in interaction.interaction.items():
            if value.dim() >= 2 and value.size(1) == self.max_len:
                interaction.interaction[field] = value[:, :width]
        return interaction, history_index, positive_u, positive_i


# --------------------------------------------------------------------- evaluation candidates
class DomainCandidateMixin:
    """Full-sort evaluation over the target domain's items only (option ``eval_negatives``: over the
    positive and N sampled negatives of that domain). The hidden items are returned as RecBole's
    ``history_index`` (a boolean [B, n_items] mask), whose scores the trainer sets to -inf."""

    def __init__(self, config, dataset, sampler, shuffle=False):
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self.candidate_device = config["device"]
        self.eval_negatives = config["eval_negatives"]
        self.negative_seed = int(config["seed"])
        self.domain_items = torch.from_numpy(dataset.domain_items)
        self.user_items = getattr(dataset, "user_items", None)
        self._rng = np.random.default_rng(self.negative_seed)

    def __iter__(self):
        # the same negatives in every evaluation
        self._rng = np.random.default_rng(self.negative_seed)
        return super().__iter__()

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        if history_index is not None:
            raise ValueError("cross-domain evaluation expects RecBole's sequential full-sort loader (no history index)")
        hidden = ~self.domain_items[interaction[TARGET_DOMAIN]]
        if self.eval_negatives:
            hidden = self._sampled_candidates(interaction, hidden)
        return interaction, hidden.to(self.candidate_device), positive_u, positive_i

    def _sampled_candidates(self, interaction, hidden):
        users = interaction[self.uid_field].numpy()
        positives = interaction[self.iid_field].numpy()
        kept = torch.ones_like(hidden)
        for row, (user, positive) in enumerate(zip(users, positives)):
            pool = np.flatnonzero(~hidden[row].numpy())
            if self.user_items is not None:
                indptr, items = self.user_items
                pool = np.setdiff1d(pool, items[indptr[user] : indptr[user + 1]], assume_unique=True)
            chosen = self._rng.choice(pool, size=min(self.eval_negatives, len(pool)), replace=False)
            kept[row, chosen] = False
            kept[row, positive] = False
        return kept


def domain_candidate_loader(loader_class):
    """``loader_class`` (a sequential full-sort loader) restricted to the target domain's items."""
    return type(loader_class.__name__, (DomainCandidateMixin, loader_class), {"__module__": __name__})
