"""Two-domain sequential data: loading, a per-(user, domain) leave-one-out split, and evaluation
over the target domain's items. The design is written up in ``docs/cross-domain.md``.

Options (dataset YAML, e.g. ``properties/dataset/cloth-sport.yaml``):

- ``domain_field``: the interaction column holding each interaction's domain token (two domains);
- ``domain_names``: ``{token: name}``, the names used in result keys (default: the tokens);
- ``dataset_domain``: instead of ``domain_field``, for a file that holds one domain only (the
  per-domain files ``cloth-sport-cloth`` / ``-sport``): its name, so that its samples and groups
  line up with that domain of the two-domain file;
- ``long_tail_length``: a user is long-tailed in a domain with 1..N history items there (default 3);
- ``eval_negatives``: ``~`` = full ranking over the target domain's items; N = the positive and
  N negatives drawn from the target domain's items the user never interacted with (the authors'
  1 + 999 protocol, for comparison);
- ``eval_negative_pool`` (with ``eval_negatives`` and ``row_split``): ``all`` (default) = those
  items; ``rows`` = only those that occur in the evaluated part's rows (the authors' test pool);
- ``row_split``: ``~`` = the leave-one-out above; a dict = the i2VAE authors' row protocol: the
  samples are the rows of their train and test CSV files, a validation part drawn from the train
  rows (docs/cross-domain.md, "The authors' row protocol").

Every model, this plugin's or RecBole's, gets :class:`CrossDomainSequentialDataset` and the
candidate mask of ``recbole_diffusion.evaluation.domain_candidate_loader`` when one of ``domain_field`` / ``dataset_domain``
is set (``recbole_diffusion.utils``).
"""

import csv
import json
import os

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.utils import FeatureSource, FeatureType, ModelType

from recbole_diffusion.errors import ConfigError, DataError

# fields added to every sample (see docs/cross-domain.md)
TARGET_DOMAIN = "target_domain"
DOMAIN_HISTORY = "domain_history_length"
DOMAIN_PREFIXES = ("x_", "y_")  # X = the first domain in token order, Y = the second
TRAIN, VALID, TEST = 0, 1, 2
# the authors' rule (mean length of the shortest 80% of users with > 2 items) gives lists of at
# most 4 items, i.e. 3 history items, in both domains of cloth-sport
DEFAULT_LONG_TAIL = 3
# the row protocol: the columns of the authors' CSV files; seq_d1 / domain_id 0 is the first domain
# in token order (X), seq_d2 / domain_id 1 the second (Y)
ROW_USER, ROW_DOMAIN = "user_id", "domain_id"
ROW_LISTS = ("seq_d1", "seq_d2")
ROW_SPLIT_KEYS = ("train", "test", "valid_ratio", "domain_id")
DEFAULT_VALID_RATIO = 0.1
# the valid rows are drawn from their own stream of the run's seed, apart from every other seeded draw
_VALID_ROWS_STREAM = 0x524F5753


def domain_list_fields(config):
    """``[(x_item_id_list, x_item_length), (y_..., y_...)]``: each domain's part of a sample."""
    item_list = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    return [(p + item_list, p + config["ITEM_LIST_LENGTH_FIELD"]) for p in DOMAIN_PREFIXES]


def cross_domain_options(config):
    """The checked cross-domain options, or ``None`` when the dataset is not cross-domain.

    Returns a dict: ``domain_field`` (str or None), ``domain_names`` ({token: name} or None),
    ``dataset_domain`` (str or None), ``long_tail_length`` (int), ``eval_negatives`` (int or None),
    ``eval_negative_pool`` ("all" or "rows"), ``row_split`` (the dict of :func:`row_split_option`, or None).
    """
    field, single = config["domain_field"], config["dataset_domain"]
    if field is None and single is None:
        for option, default in (("eval_negatives", None), ("eval_negative_pool", "all"), ("row_split", None)):  # two-domain only
            if config[option] not in (None, default):
                raise ConfigError(f"{option} is an option of a cross-domain dataset (set domain_field or dataset_domain); "
                                  f"this dataset has neither, so {option}={config[option]!r} would be ignored")
        return None
    if field is not None and single is not None:
        raise ConfigError(
            f"domain_field ({field!r}) and dataset_domain ({single!r}) are both set: domain_field names the "
            "domain column of a two-domain file, dataset_domain names the one domain of a per-domain file; set one"
        )
    if field is not None and not isinstance(field, str):
        raise ConfigError(f"domain_field must be the name of the domain column (a string), got {field!r}")
    if single is not None and not isinstance(single, (str, int)):
        raise ConfigError(f"dataset_domain must be a domain name such as 'cloth', got {single!r}")
    names = config["domain_names"]
    if names is not None:
        if not isinstance(names, dict) or not names:
            raise ConfigError(f"domain_names must map each domain token to a name, e.g. {{'0': cloth, '1': sport}}; got {names!r}")
        names = {str(k): str(v) for k, v in names.items()}
    tail = config["long_tail_length"]
    if tail is None:
        tail = DEFAULT_LONG_TAIL
    if isinstance(tail, bool) or not isinstance(tail, int) or tail < 1:
        raise ConfigError(f"long_tail_length must be an integer >= 1 (most target-domain history items of a long-tailed user), got {tail!r}")
    negatives = config["eval_negatives"]
    if negatives is not None and (isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1):
        raise ConfigError(f"eval_negatives must be ~ (full ranking over the target domain) or an integer >= 1, got {negatives!r}")
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        raise ConfigError(
            "domain_field / dataset_domain: the cross-domain split and groups are for sequential models; "
            "set domain_field=None and dataset_domain=None to read the file as a plain dataset"
        )
    if field is not None and config["train_mode"] == "sequence":
        raise ConfigError(
            "train_mode=sequence cannot be used on a two-domain dataset (domain_field set): a sample's input is the "
            "other domain's context followed by its own history, so a user's samples are not prefixes of one "
            "sequence; use train_mode=prefix (per-domain files such as cloth-sport-cloth allow sequence)"
        )
    split = config["eval_args"]["split"]
    if not (isinstance(split, dict) and split.get("LS") == "valid_and_test"):
        raise ConfigError(
            "eval_args: a cross-domain dataset is split by a leave-one-out per (user, domain) into train, valid and "
            f"test (docs/cross-domain.md); set eval_args split to {{'LS': 'valid_and_test'}}, got {split!r}"
        )
    if any(mode != "full" for mode in config["eval_args"]["mode"].values()):
        raise ConfigError(
            "eval_args mode: cross-domain evaluation ranks over the target domain's items (mode: full); for the "
            "authors' 1 + 999 protocol set eval_negatives: 999 instead of a sampled mode"
        )
    row_split = row_split_option(config, single)
    return {"domain_field": field, "domain_names": names, "dataset_domain": None if single is None else str(single),
            "long_tail_length": tail, "eval_negatives": negatives, "eval_negative_pool": negative_pool_option(config, negatives, row_split),
            "row_split": row_split}


def negative_pool_option(config, negatives, row_split):
    """The checked ``eval_negative_pool``: "all" (default: the target domain's items the user never
    interacted with) or "rows" (of those, only the items that occur in the evaluated part's rows: the
    i2VAE authors' test pool, which needs ``eval_negatives`` and ``row_split``)."""
    value = config["eval_negative_pool"]
    if value is None or value == "all":
        return "all"
    if value != "rows":
        raise ConfigError(f"eval_negative_pool must be all (default) or rows, got {value!r}")
    if negatives is None:
        raise ConfigError("eval_negative_pool: rows draws sampled negatives; set eval_negatives (e.g. 999) too, or leave it at all")
    if row_split is None:
        raise ConfigError("eval_negative_pool: rows takes the items of the evaluated part's rows, which only row_split has; set row_split "
                          "or leave it at all")
    return "rows"


def row_split_option(config, single):
    """The checked ``row_split`` option: ``None`` (the leave-one-out) or ``{train, test, valid_ratio,
    domain_id}``; ``single`` is ``dataset_domain`` (a per-domain file needs ``domain_id``)."""
    value = config["row_split"]
    if value is None:
        return None
    example = "e.g. {train: raw/cloth_sport_train.csv, test: raw/cloth_sport_test_csu.csv, valid_ratio: 0.1}"
    if not isinstance(value, dict):
        raise ConfigError(f"row_split must be ~ (leave-one-out per user and domain) or a dict, {example}; got {value!r}")
    unknown = sorted(str(key) for key in value if key not in ROW_SPLIT_KEYS)
    if unknown:
        raise ConfigError(f"row_split: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(ROW_SPLIT_KEYS)}")
    for key in ("train", "test"):
        if not isinstance(value.get(key), str) or not value[key]:
            raise ConfigError(
                f"row_split {key}: the path of the {key} rows' CSV file, relative to the dataset's folder, {example}; "
                f"got {value.get(key)!r}"
            )
    ratio = value.get("valid_ratio", DEFAULT_VALID_RATIO)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ConfigError(f"row_split valid_ratio: the share of train rows drawn as the validation part, a number in (0, 1); got {ratio!r}")
    domain_id = value.get("domain_id")
    if single is not None and (isinstance(domain_id, bool) or domain_id not in (0, 1)):
        raise ConfigError(
            f"row_split domain_id: a per-domain file (dataset_domain {single!r}) takes the rows whose domain_id is its "
            f"domain: set domain_id to 0 (the rows' seq_d1) or 1 (seq_d2); got {domain_id!r}"
        )
    if single is None and domain_id is not None:
        raise ConfigError(
            "row_split domain_id is for a per-domain file (dataset_domain); a two-domain file takes the rows of both domains"
        )
    if config["train_mode"] == "sequence":
        raise ConfigError(
            "train_mode: sequence trains every position of a user's whole sequence; under row_split a train row is "
            "one training sample (its last item the only target, as the authors train): set train_mode to prefix"
        )
    if config["sparse_users"]:
        raise ConfigError(
            "sparse_users: its groups are users with few training interactions, which a row (one training sample per "
            "row) does not count; under row_split use the cold-start and long-tailed groups, or set sparse_users to ~"
        )
    if config["train_noise_ratio"]:
        raise ConfigError(
            "train_noise_ratio: noise is injected into the interaction file's training part, which the row protocol "
            "(row_split) does not read its samples from; set train_noise_ratio to 0 or row_split to ~"
        )
    return {"train": value["train"], "test": value["test"], "valid_ratio": float(ratio), "domain_id": domain_id}


def _inter_file(config):
    return os.path.join(config["data_path"], f"{config['dataset']}.inter")


def _tail(values, max_len):
    return values[-max_len:] if max_len else values[:0]


class CrossDomainSequentialDataset(SequentialDataset):
    """RecBole's sequential dataset with the two-domain split of ``docs/cross-domain.md``.

    After ``build()`` the parent dataset (and every split, which are shallow copies) carries:
    ``domain_tokens`` (raw tokens, X first), ``domain_display_names``, ``domain_items`` (bool
    [2, item_num]: items occurring in each domain, anywhere in the file), ``row_items`` (under
    ``row_split``, each split's own: bool [2, item_num], the items of each domain's lists in that
    part's rows; None otherwise) and ``train_interactions``
    (``(users, items, domains)`` arrays of every train-part interaction, what a pre-trained
    component such as i2VAE's pseudo-sequence generator may be fitted on; under ``row_split`` the
    training rows' interactions without any valid or test target, :func:`_row_train_interactions`).
    """

    def __init__(self, config):
        self.cross_domain = config.plugin_options["cross_domain"]
        if self.cross_domain is None:
            raise ConfigError("CrossDomainSequentialDataset needs domain_field or dataset_domain")
        super().__init__(config)
        self._check_domains()

    # ----------------------------------------------------------------- domains
    def _check_domains(self):
        options, path = self.cross_domain, _inter_file(self.config)
        field = options["domain_field"]
        if field is None:  # a per-domain file: one domain, named by dataset_domain
            self.domain_tokens = [options["dataset_domain"]]
            self.domain_display_names = [options["dataset_domain"]]
            return
        if field not in self.inter_feat:
            raise DataError(
                f"{path}: domain_field {field!r} is not a column of the interaction file (columns read: "
                f"{', '.join(self.inter_feat.columns)}); add a `{field}:token` column with each interaction's "
                "domain, check load_col, or unset domain_field for a single-domain dataset"
            )
        id_tokens = self.field2id_token[field]
        present = sorted({str(id_tokens[i]) for i in self.inter_feat[field].unique()})
        names = options["domain_names"]
        tokens = sorted(names) if names is not None else present
        for token in tokens:
            if token not in present:
                raise DataError(
                    f"{path}: domain {names[token]!r} (token {token!r} of domain_names) has no items: no interaction "
                    f"has {field}={token} (present: {', '.join(present)})"
                )
        unknown = [t for t in present if t not in tokens]
        if unknown:
            raise DataError(f"{path}: {field} holds the tokens {', '.join(unknown)}, which domain_names does not name")
        if len(tokens) != 2:
            raise DataError(
                f"{path}: domain_field {field!r} holds {len(tokens)} domain(s) ({', '.join(tokens)}); "
                "the cross-domain models and split take exactly two"
            )
        self.domain_tokens = tokens
        self.domain_display_names = [names[t] if names else t for t in tokens]

    def _domain_index(self):
        """Domain index (0 = X, 1 = Y) of every row of ``inter_feat`` (an ``Interaction``)."""
        n = len(self.inter_feat)
        field = self.cross_domain["domain_field"]
        if field is None:
            return np.zeros(n, dtype=np.int64)
        id_tokens = np.asarray([str(t) for t in self.field2id_token[field]])
        token_to_index = {t: i for i, t in enumerate(self.domain_tokens)}
        lookup = np.asarray([token_to_index.get(t, -1) for t in id_tokens])
        return lookup[self.inter_feat[field].numpy()]

    # ----------------------------------------------------------------- samples and split
    def data_augmentation(self):
        """One sample per held-out or trainable interaction (or, with ``row_split``, per row of the
        row files), with its per-domain contexts."""
        self._check_field("uid_field", "time_field")
        users = self.inter_feat[self.uid_field].numpy()
        items = self.inter_feat[self.iid_field].numpy()
        times = self.inter_feat[self.time_field].numpy()
        domains = self._domain_index()
        order = np.lexsort((times, domains, users))  # stable: ties keep file order
        users, items, domains = users[order], items[order], domains[order]

        self.domain_items = np.zeros((2, self.item_num), dtype=bool)
        self.domain_items[domains, items] = True
        self.domain_items[:, 0] = False
        if self.cross_domain["row_split"] is None:
            samples = self._leave_one_out_samples(users, items, domains)
        else:
            samples = self._row_samples(users, items, domains)
        self._set_samples(order[samples["interaction"]], samples)

    def _leave_one_out_samples(self, users, items, domains):
        """The per-(user, domain) leave-one-out of docs/cross-domain.md on the sorted interactions;
        returns the samples as :meth:`_set_samples` takes them (``interaction``: sorted index of each
        sample's target) and sets ``train_interactions``."""
        # phase of every row: last of its (user, domain) run -> test, the one before -> valid
        starts = np.flatnonzero(np.r_[True, (users[1:] != users[:-1]) | (domains[1:] != domains[:-1])])
        run_id = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(users)]))
        run_end = np.r_[starts[1:], len(users)][run_id]
        index = np.arange(len(users))
        position = index - starts[run_id]
        phase = np.where(index == run_end - 1, TEST, np.where(index == run_end - 2, VALID, TRAIN))
        train_rows = phase == TRAIN
        self.train_interactions = (users[train_rows], items[train_rows], domains[train_rows])

        rows = np.flatnonzero((phase != TRAIN) | (position >= 1))
        # per user: its runs (domain -> row range), to read the other domain's context
        user_starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        user_of_row = np.repeat(np.arange(len(user_starts)), np.diff(np.r_[user_starts, len(users)]))
        runs_of_user = {}
        for start in starts:
            runs_of_user.setdefault(user_of_row[start], {})[domains[start]] = start
        own, other = [], []
        for row in rows:
            d, start = domains[row], starts[run_id[row]]
            own.append(items[start:row])  # everything before the target in its domain
            seen = np.empty(0, dtype=np.int64)
            other_start = runs_of_user[user_of_row[row]].get(1 - d)
            if other_start is not None:
                other_end = run_end[other_start]
                visible = phase[other_start:other_end] == TRAIN
                if phase[row] == TEST:
                    visible |= phase[other_start:other_end] == VALID
                seen = items[other_start:other_end][visible]
            other.append(seen)
        return {"interaction": rows, "domain": domains[rows], "own": own, "other": other, "phase": phase[rows]}

    def _row_samples(self, users, items, domains):
        """The row protocol (option ``row_split``, docs/cross-domain.md): one sample per row of the
        train and test files, a seeded share of the train rows drawn as the validation part. Returns
        the samples as :meth:`_set_samples` takes them and sets ``train_interactions``."""
        options = self.cross_domain["row_split"]
        train_file, test_file = (os.path.join(self.config["data_path"], options[part]) for part in ("train", "test"))
        train_rows, test_rows = read_rows(train_file), read_rows(test_file)
        # drawn over every train row of the file, so that a per-domain file gets the validation rows
        # of its domain that the two-domain file gets
        n_valid = int(round(options["valid_ratio"] * len(train_rows)))
        if not 0 < n_valid < len(train_rows):
            raise DataError(
                f"{train_file}: row_split valid_ratio {options['valid_ratio']} of its {len(train_rows)} rows "
                f"leaves {n_valid} validation and {len(train_rows) - n_valid} training rows; both parts need at least one"
            )
        rng = np.random.default_rng(np.random.SeedSequence([int(self.config["seed"]), _VALID_ROWS_STREAM]))
        is_valid = np.zeros(len(train_rows), dtype=bool)
        is_valid[rng.choice(len(train_rows), size=n_valid, replace=False)] = True
        phases = [VALID if v else TRAIN for v in is_valid] + [TEST] * len(test_rows)

        single = options["domain_id"]  # a per-domain file: its domain's rows, as its domain 0
        interaction_of = {(u, d, i): k for k, (u, d, i) in enumerate(zip(users.tolist(), domains.tolist(), items.tolist()))}
        samples = {key: [] for key in ("interaction", "domain", "own", "other", "phase")}
        self._phase_items = np.zeros((3, 2, self.item_num), dtype=bool)
        for row, phase in zip(train_rows + test_rows, phases):
            self._mark_row_items(row, phase, single)  # every row of the part, also the other domain's of a per-domain file
            if single is not None and row["domain"] != single:
                continue
            user = self._row_token_id(row, ROW_USER, self.uid_field, row["user"])
            lists = self._row_item_ids(row, single)
            d = 0 if single is not None else row["domain"]
            target, history = lists[d][-1], lists[d][:-1]
            key = (user, d, target)
            if key not in interaction_of:
                raise DataError(
                    f"{row['where']}, field {ROW_LISTS[row['domain']]}: the target item {row['lists'][row['domain']][-1]!r} "
                    f"is not an interaction of user {row['user']!r} in domain {self.domain_display_names[d]} of "
                    f"{_inter_file(self.config)}; the interaction file must hold the rows' interactions"
                )
            samples["interaction"].append(interaction_of[key])
            samples["domain"].append(d)
            # the target is removed from its list wherever it occurs (the authors' rule)
            samples["own"].append(np.asarray([i for i in history if i != target], dtype=np.int64))
            samples["other"].append(np.asarray(lists[1 - d], dtype=np.int64))
            samples["phase"].append(phase)
        samples = {key: value if key in ("own", "other") else np.asarray(value, dtype=np.int64) for key, value in samples.items()}
        self.train_interactions = _row_train_interactions(
            samples, users[samples["interaction"]], items[samples["interaction"]], self.item_num
        )
        return samples

    def _mark_row_items(self, row, phase, single):
        """Mark the items of the row's lists (of the file's domain, for a per-domain file) as items of
        its part (option ``eval_negative_pool: rows``); a token the file does not hold is no candidate."""
        ids = self.field2token_id[self.iid_field]
        for d, source in enumerate([single] if single is not None else [0, 1]):
            found = [ids[token] for token in row["lists"][source] if token in ids]
            self._phase_items[phase, d, found] = True

    def _row_item_ids(self, row, single):
        """The row's two item lists as internal ids ([X, Y]; a per-domain file: [its list, empty]),
        each item checked to be one of that domain's items in the interaction file."""
        sources = [single, None] if single is not None else [0, 1]
        lists = []
        for d, source in enumerate(sources):
            tokens = [] if source is None else row["lists"][source]
            ids = [self._row_token_id(row, ROW_LISTS[source], self.iid_field, token) for token in tokens]
            stray = [token for token, item in zip(tokens, ids) if not self.domain_items[d, item]]
            if stray:
                raise DataError(
                    f"{row['where']}, field {ROW_LISTS[source]}: item {stray[0]!r} never occurs in domain "
                    f"{self.domain_display_names[d]} of {_inter_file(self.config)}"
                )
            lists.append(ids)
        return lists

    def _row_token_id(self, row, column, field, token):
        ids = self.field2token_id[field]
        if token not in ids:
            kind = "user" if field == self.uid_field else "item"
            raise DataError(f"{row['where']}, field {column}: {kind} {token!r} is not in {_inter_file(self.config)}")
        return ids[token]

    def _set_samples(self, interactions, samples):
        """Make the samples the dataset's rows: ``interactions`` (the ``inter_feat`` row of each
        sample's target), ``samples["domain"]`` (target domain), ``own`` / ``other`` (id arrays:
        target-domain history, other domain's context, each in order) and ``phase``."""
        max_len = self.config["MAX_ITEM_LIST_LENGTH"]
        n = len(interactions)
        lists = {key: np.zeros((n, max_len), dtype=np.int64) for key in ("merged", 0, 1)}
        lengths = {key: np.zeros(n, dtype=np.int64) for key in ("merged", 0, 1)}
        for out, (d, own, other) in enumerate(zip(samples["domain"], samples["own"], samples["other"])):
            for key, values in ((d, own), (1 - d, other), ("merged", np.concatenate([other, own]))):
                values = _tail(values, max_len)
                lists[key][out, : len(values)] = values
                lengths[key][out] = len(values)

        new_data = self.inter_feat[interactions]
        item_list_field = self.iid_field + self.config["LIST_SUFFIX"]
        self.item_id_list_field = item_list_field
        fields = {
            item_list_field: torch.from_numpy(lists["merged"]),
            # an empty history reads as one padding item, what RecBole's encoders can take
            self.item_list_length_field: torch.from_numpy(np.maximum(lengths["merged"], 1)),
            TARGET_DOMAIN: torch.from_numpy(np.asarray(samples["domain"], dtype=np.int64)),
            DOMAIN_HISTORY: torch.from_numpy(np.asarray([len(own) for own in samples["own"]], dtype=np.int64)),
        }
        for d, (list_field, length_field) in enumerate(domain_list_fields(self.config)):
            fields[list_field] = torch.from_numpy(lists[d])
            fields[length_field] = torch.from_numpy(lengths[d])
        for name, value in fields.items():
            is_list = value.dim() == 2
            self.set_field_property(
                name, FeatureType.TOKEN_SEQ if is_list else FeatureType.TOKEN, FeatureSource.INTERACTION, max_len if is_list else 1
            )
            new_data.interaction[name] = value
        self.inter_feat = new_data
        self._phase = np.asarray(samples["phase"])

    def build(self):
        """``[train, valid, test]`` by the split of ``data_augmentation``."""
        self._change_feat_format()
        phase_items = getattr(self, "_phase_items", None)  # set by the row protocol only
        parts = []
        for part in (TRAIN, VALID, TEST):
            split = self.copy(self.inter_feat[np.flatnonzero(self._phase == part)])
            split.row_items = None if phase_items is None else phase_items[part] & self.domain_items
            parts.append(split)
        return parts


def _row_train_interactions(samples, sample_users, sample_targets, n_items):
    """What the row protocol lets a model fit before training (i2VAE's pseudo-sequence generator),
    as ``(users, items, domains)``: each distinct (user, item, domain) of every row's inputs (its
    target-domain history and the other domain's list: what its prediction reads, known at
    prediction time) and of the training rows' targets, less every (user, item, domain) that is the
    target of a valid or test row. As in the leave-one-out, where the generator sees every user's
    training part, a user who is only in the test file gets pseudo-items from its own history. A
    user's other-domain list can hold the target of that user's held-out row of the other domain
    (the authors' data): the samples keep it, what is fitted here does not."""
    domain = samples["domain"]
    train = np.flatnonzero(samples["phase"] == TRAIN)
    held = np.flatnonzero(samples["phase"] != TRAIN)
    parts = [_triple_keys(sample_users[train], domain[train], sample_targets[train], n_items)]
    for k in range(len(domain)):
        for d, values in ((domain[k], samples["own"][k]), (1 - domain[k], samples["other"][k])):
            parts.append(_triple_keys(np.full(len(values), sample_users[k]), d, values, n_items))
    kept = np.unique(np.concatenate(parts))
    kept = kept[~np.isin(kept, _triple_keys(sample_users[held], domain[held], sample_targets[held], n_items))]
    return kept // (2 * n_items), kept % n_items, (kept // n_items) % 2


def _triple_keys(users, domains, items, n_items):
    """One integer per (user, domain, item), ordered by user, then domain, then item."""
    return (np.asarray(users, dtype=np.int64) * 2 + np.asarray(domains, dtype=np.int64)) * n_items + np.asarray(items, dtype=np.int64)


def read_rows(path):
    """The rows of one row-protocol CSV file (columns ``user_id, seq_d1, seq_d2, domain_id``; the
    lists JSON lists of item tokens), checked: a list of dicts ``user`` (token), ``lists`` (the
    seq_d1 and seq_d2 token lists), ``domain`` (0 or 1) and ``where`` (file and row, for errors). Every problem is a :class:`DataError` naming the file, the row and the field."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: row_split names this file, which does not exist (its paths are relative to the dataset's folder)")
    columns = (ROW_USER, *ROW_LISTS, ROW_DOMAIN)
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}, line 1: no column {', '.join(missing)}; a row file has the columns {', '.join(columns)}")
        for number, record in enumerate(reader, 1):
            where = f"{path}, row {number} (line {reader.line_num})"
            absent = [column for column in columns if not (record.get(column) or "").strip()]
            if absent:
                raise DataError(f"{where}, field {absent[0]}: empty or missing")
            domain = record[ROW_DOMAIN].strip()
            if domain not in ("0", "1"):
                raise DataError(f"{where}, field {ROW_DOMAIN}: {domain!r} is not a domain (0: the target ends seq_d1, 1: seq_d2)")
            rows.append({"user": record[ROW_USER].strip(), "lists": [_row_list(record[c], where, c) for c in ROW_LISTS],
                         "domain": int(domain), "where": where})
    if not rows:
        raise DataError(f"{path}: no rows after the header line")
    for row in rows:
        if not row["lists"][row["domain"]]:
            raise DataError(f"{row['where']}, field {ROW_LISTS[row['domain']]}: the target domain's list is empty (no target)")
    return rows


def _row_list(text, where, column):
    """A JSON list of item tokens (integers or strings) as a list of str."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}, field {column}: not a JSON list of item ids ({exc.msg}): {text[:60]!r}") from None
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in values):
        raise DataError(f"{where}, field {column}: not a JSON list of item ids (integers or strings): {text[:60]!r}")
    return [str(v) for v in values]
