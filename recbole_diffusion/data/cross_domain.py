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
  1 + 999 protocol, for comparison).

Every model, this plugin's or RecBole's, gets :class:`CrossDomainSequentialDataset` and the
candidate mask of ``recbole_diffusion.evaluation.domain_candidate_loader`` when one of ``domain_field`` / ``dataset_domain``
is set (``recbole_diffusion.utils``).
"""

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


def domain_list_fields(config):
    """``[(x_item_id_list, x_item_length), (y_..., y_...)]``: each domain's part of a sample."""
    item_list = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    return [(p + item_list, p + config["ITEM_LIST_LENGTH_FIELD"]) for p in DOMAIN_PREFIXES]


def cross_domain_options(config):
    """The checked cross-domain options, or ``None`` when the dataset is not cross-domain.

    Returns a dict: ``domain_field`` (str or None), ``domain_names`` ({token: name} or None),
    ``dataset_domain`` (str or None), ``long_tail_length`` (int), ``eval_negatives`` (int or None).
    """
    field, single = config["domain_field"], config["dataset_domain"]
    if field is None and single is None:
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
    return {"domain_field": field, "domain_names": names, "dataset_domain": None if single is None else str(single),
            "long_tail_length": tail, "eval_negatives": negatives}


def _inter_file(config):
    return os.path.join(config["data_path"], f"{config['dataset']}.inter")


def _tail(values, max_len):
    return values[-max_len:] if max_len else values[:0]


class CrossDomainSequentialDataset(SequentialDataset):
    """RecBole's sequential dataset with the two-domain split of ``docs/cross-domain.md``.

    After ``build()`` the parent dataset (and every split, which are shallow copies) carries:
    ``domain_tokens`` (raw tokens, X first), ``domain_display_names``, ``domain_items`` (bool
    [2, item_num]: items occurring in each domain, anywhere in the file) and ``train_interactions``
    (``(users, items, domains)`` arrays of every train-part interaction, what a pre-trained
    component such as i2VAE's pseudo-sequence generator may be fitted on).
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
        """One sample per held-out or trainable interaction, with its per-domain contexts."""
        max_len = self.config["MAX_ITEM_LIST_LENGTH"]
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

        # phase of every row: last of its (user, domain) run -> test, the one before -> valid
        starts = np.flatnonzero(np.r_[True, (users[1:] != users[:-1]) | (domains[1:] != domains[:-1])])
        run_id = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(users)]))
        run_end = np.r_[starts[1:], len(users)][run_id]
        index = np.arange(len(users))
        position = index - starts[run_id]
        phase = np.where(index == run_end - 1, TEST, np.where(index == run_end - 2, VALID, TRAIN))
        train_rows = phase == TRAIN
        self.train_interactions = (users[train_rows], items[train_rows], domains[train_rows])

        samples = (phase != TRAIN) | (position >= 1)
        rows = np.flatnonzero(samples)
        n = len(rows)
        lists = {key: np.zeros((n, max_len), dtype=np.int64) for key in ("merged", 0, 1)}
        lengths = {key: np.zeros(n, dtype=np.int64) for key in ("merged", 0, 1)}

        # per user: its runs (domain -> row range), to read the other domain's context
        user_starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        user_of_row = np.repeat(np.arange(len(user_starts)), np.diff(np.r_[user_starts, len(users)]))
        runs_of_user = {}
        for start in starts:
            runs_of_user.setdefault(user_of_row[start], {})[domains[start]] = start
        for out, row in enumerate(rows):
            d, start = domains[row], starts[run_id[row]]
            own = items[start:row]  # everything before the target in its domain
            other = np.empty(0, dtype=np.int64)
            other_start = runs_of_user[user_of_row[row]].get(1 - d)
            if other_start is not None:
                other_end = run_end[other_start]
                visible = phase[other_start:other_end] == TRAIN
                if phase[row] == TEST:
                    visible |= phase[other_start:other_end] == VALID
                other = items[other_start:other_end][visible]
            for key, values in ((d, own), (1 - d, other), ("merged", np.concatenate([other, own]))):
                values = _tail(values, max_len)
                lists[key][out, : len(values)] = values
                lengths[key][out] = len(values)

        new_data = self.inter_feat[order[rows]]
        item_list_field = self.iid_field + self.config["LIST_SUFFIX"]
        self.item_id_list_field = item_list_field
        fields = {
            item_list_field: torch.from_numpy(lists["merged"]),
            # an empty history reads as one padding item, what RecBole's encoders can take
            self.item_list_length_field: torch.from_numpy(np.maximum(lengths["merged"], 1)),
            TARGET_DOMAIN: torch.from_numpy(domains[rows]),
            DOMAIN_HISTORY: torch.from_numpy(position[rows]),
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
        self._phase = phase[rows]

    def build(self):
        """``[train, valid, test]`` by the per-(user, domain) leave-one-out of ``data_augmentation``."""
        self._change_feat_format()
        return [self.copy(self.inter_feat[np.flatnonzero(self._phase == part)]) for part in (TRAIN, VALID, TEST)]
