"""Evaluation: per-user target ranks, metrics on user groups, and the full-sort loaders.

Everything an evaluation adds to RecBole's lives here:

- collectors that remember each evaluated row's user and target rank (:class:`GroupCollector`,
  :class:`CrossDomainCollector`), from which the trainer reports per-user ranks;
- metrics on sparse users (option ``sparse_users``) and, on a cross-domain dataset, per target
  domain and user group (cold-start, long-tailed);
- the full-sort loader batched by history length with padding trimmed
  (:class:`TrimmedFullSortEvalDataLoader`) and the cross-domain candidate restriction
  (:func:`domain_candidate_loader`);
- under torch.distributed, the evaluation split by whole batches (:func:`shard_eval_loader`) and
  the rows of every rank gathered back into one-process order (:meth:`GroupCollector.get_data_struct`).

Distributed evaluation
----------------------
RecBole's distributed evaluation gives each rank every W-th user (torch's ``DistributedSampler``,
which repeats users to even the shares) with a W-times smaller batch, and averages the per-rank
metrics weighted by the number of batches: close to, but not, the metrics of one process. Here
rank r scores the whole batches r, r + W, r + 2W, ... of the one-process batch layout, and the
collector gathers every rank's rows and puts them back in one-process order before RecBole's
metrics are computed, on every rank. The metrics, the per-user ranks, the sparse-user and
cross-domain groups are then exactly those of one process scoring every user, also for models
whose evaluation noise is seeded per batch (DiffRec, DreamRec). When the data has fewer batches
than ranks, the batches are made smaller so that every rank has one; only then does the layout
differ from one process's.

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
at position ``item_length - 1`` (RecBole's SASRec and GRU4Rec, listed here); RecBole's BERT4Rec,
whose bidirectional attention gives padding keys a score of -10000 (a weight of exactly 0) and
whose test input (the history shifted left, the mask token after its last item) fits in the
batch's own width; and this plugin's models that set the class attribute
``TRIM_EVAL_PADDING = True``. Every other model keeps RecBole's loader unchanged.
"""

import math

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator import Collector

from recbole_diffusion.data.cross_domain import DOMAIN_HISTORY, TARGET_DOMAIN
from recbole_diffusion.distributed import all_gather_objects, is_distributed, rank_and_world
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
    1-based rank of each row's target in RecBole's own ranking (see :func:`target_ranks`).

    Under torch.distributed, :meth:`get_data_struct` gathers the rows of every rank (each scored
    whole batches of the one-process layout, :func:`shard_eval_loader`) in one-process order."""

    def __init__(self, config):
        super().__init__(config)
        self.uid_field = config["USER_ID_FIELD"]
        self._batches = []  # per collected batch: its per-row values beyond RecBole's struct
        self._row_counts = []  # per collected batch: the rows it added to each of RecBole's row keys
        self.last_users = None
        self.last_ranks = None
        self.last_struct = None

    def _row_sizes(self):
        return {key: self.data_struct[key].size(0) for key in ROW_KEYS if key in self.data_struct}

    def batch_values(self, interaction, scores_tensor, positive_u, positive_i):
        """This batch's per-row values kept next to RecBole's struct (subclasses add theirs)."""
        # None marks a batch whose rows are not one user with one target each (a sampled
        # evaluation's candidate rows, several test items per user): no ranks for that evaluation
        ranks = None
        if len(interaction) == scores_tensor.size(0):
            ranks = target_ranks(scores_tensor, positive_u, positive_i, max(self.topk))
        return {"user": interaction[self.uid_field].cpu(), "rank": ranks}

    def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
        before = self._row_sizes()
        super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
        self._row_counts.append({key: size - before.get(key, 0) for key, size in self._row_sizes().items()})
        self._batches.append(self.batch_values(interaction, scores_tensor, positive_u, positive_i))

    def get_data_struct(self):
        struct = super().get_data_struct()
        batches, counts = self._batches, self._row_counts
        self._batches, self._row_counts = [], []
        if is_distributed():
            batches = _gather_batches(struct, batches, counts)
        self.collected(batches)
        self.last_struct = struct
        return struct

    def collected(self, batches):
        """Keep the evaluation's per-row values (``batches``: one dict per batch, in order)."""
        users = [b["user"] for b in batches]
        self.last_users = torch.cat(users) if users else torch.zeros(0, dtype=torch.long)
        complete = bool(batches) and all(b["rank"] is not None for b in batches)
        self.last_ranks = torch.cat([b["rank"] for b in batches]) if complete else None


def split_rows(tensor, sizes):
    """``torch.split(tensor, sizes)`` as tensors of their own: a view pickles its whole storage,
    so W ranks sending n views of one tensor would send it n times over."""
    return [part.clone() for part in torch.split(tensor, sizes)]


def _gather_batches(struct, batches, counts):
    """Every rank's collected batches, in one-process order: rank r's k-th batch is batch
    r + k·W. ``struct``'s row keys are replaced by all ranks' rows in that order; returns the
    batches' own values in that order."""
    rank, world = rank_and_world()
    rows = {key: split_rows(struct[key], [c.get(key, 0) for c in counts]) for key in ROW_KEYS if key in struct}
    everything = all_gather_objects({"rows": rows, "batches": batches})
    order = sorted((k * world + r, r, k) for r, part in enumerate(everything) for k in range(len(part["batches"])))
    keys = sorted({key for part in everything for key in part["rows"]})
    for key in keys:
        struct.set(key, torch.cat([everything[r]["rows"][key][k] for _, r, k in order if key in everything[r]["rows"]]))
    return [everything[r]["batches"][k] for _, r, k in order]


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
    if positive_u is None or scores.dim() != 2:  # a value-based (CTR) evaluation: scores, no ranking
        return None
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

    row_fields = (TARGET_DOMAIN, DOMAIN_HISTORY)

    def __init__(self, config):
        super().__init__(config)
        self.last_rows = None

    def batch_values(self, interaction, scores_tensor, positive_u, positive_i):
        values = super().batch_values(interaction, scores_tensor, positive_u, positive_i)
        values.update({name: interaction[name].cpu() for name in self.row_fields})
        return values

    def collected(self, batches):
        super().collected(batches)
        self.last_rows = {
            name: torch.cat([b[name] for b in batches]) if batches else torch.zeros(0, dtype=torch.long)
            for name in self.row_fields
        }


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


TRIM_SAFE_BUILTINS = ("SASRec", "GRU4Rec", "BERT4Rec")


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
        # the [B, n_items] mask is built where it is used (one [B] index copied, not the mask), unless
        # loader worker processes build it (they must not touch a GPU) or sampled negatives need the CPU
        self.in_main_process = not config["worker"]
        on_device = self.in_main_process and not self.eval_negatives
        self.mask_device = torch.device(self.candidate_device) if on_device else torch.device("cpu")
        candidates = dataset.domain_items
        if self.eval_negatives and config.plugin_options["cross_domain"]["eval_negative_pool"] == "rows":
            candidates = dataset.row_items  # the items of this part's rows (option eval_negative_pool)
        self.domain_items = torch.from_numpy(candidates).to(self.mask_device)
        self.user_items = getattr(dataset, "user_items", None)

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        if history_index is not None:
            raise ValueError("cross-domain evaluation expects RecBole's sequential full-sort loader (no history index)")
        hidden = ~self.domain_items[interaction[TARGET_DOMAIN].to(self.mask_device)]
        if self.eval_negatives:
            # the same negatives in every evaluation, whichever process scores the batch
            rng = np.random.default_rng([self.negative_seed, int(np.asarray(index).reshape(-1)[0])])
            hidden = self._sampled_candidates(interaction, hidden, rng)
        # a loader worker process hands the mask over on the CPU (indexing a GPU's scores takes it there)
        return interaction, hidden.to(self.candidate_device) if self.in_main_process else hidden, positive_u, positive_i

    def _sampled_candidates(self, interaction, hidden, rng):
        users = interaction[self.uid_field].numpy()
        positives = interaction[self.iid_field].numpy()
        kept = torch.ones_like(hidden)
        for row, (user, positive) in enumerate(zip(users, positives)):
            pool = np.flatnonzero(~hidden[row].numpy())
            if self.user_items is not None:
                indptr, items = self.user_items
                pool = np.setdiff1d(pool, items[indptr[user] : indptr[user + 1]], assume_unique=True)
            chosen = rng.choice(pool, size=min(self.eval_negatives, len(pool)), replace=False)
            kept[row, chosen] = False
            kept[row, positive] = False
        return kept


def domain_candidate_loader(loader_class):
    """``loader_class`` (a sequential full-sort loader) restricted to the target domain's items."""
    return type(loader_class.__name__, (DomainCandidateMixin, loader_class), {"__module__": __name__})


# ----------------------------------------------------------------------------- distributed evaluation
class RankBatchSampler(torch.utils.data.Sampler):
    """The sample indices of the evaluation batches of one rank: of the batches of ``batch_size``
    consecutive samples, batch b belongs to rank b mod ``world``."""

    def __init__(self, n_samples, batch_size, rank, world):
        self.n_samples, self.batch_size, self.rank, self.world = n_samples, batch_size, rank, world
        self.n_batches = math.ceil(n_samples / batch_size)

    def __iter__(self):
        for batch in range(self.rank, self.n_batches, self.world):
            yield from range(batch * self.batch_size, min(self.n_samples, (batch + 1) * self.batch_size))

    def __len__(self):
        return sum(
            min(self.n_samples, (b + 1) * self.batch_size) - b * self.batch_size
            for b in range(self.rank, self.n_batches, self.world)
        )


def rank_batch_size(batch_size, n_samples, world):
    """The evaluation batch size under ``world`` ranks: the configured one, or smaller when that
    would give fewer batches than ranks (every rank needs one: the ranks evaluate together)."""
    return max(1, min(batch_size, n_samples // world))


def shard_eval_loader(loader):
    """Make ``loader`` (an evaluation loader built with the one-process layout) yield only this
    rank's whole batches (:class:`RankBatchSampler`); with fewer batches than ranks, the batches
    are made smaller so that each rank has at least one. A no-op in one process."""
    rank, world = rank_and_world()
    if world == 1:
        return loader
    n_samples = loader.sample_size
    if n_samples < world:
        raise ConfigError(
            f"the evaluation data has {n_samples} row(s), fewer than the {world} processes that would share it; "
            "run fewer processes (--nproc)"
        )
    batch_size = rank_batch_size(loader.batch_sampler.batch_size, n_samples, world)
    # the torch DataLoader's own sampler cannot be replaced after it is built; its batch sampler's can
    loader.batch_sampler.sampler = RankBatchSampler(n_samples, batch_size, rank, world)
    loader.batch_sampler.batch_size = batch_size
    return loader
