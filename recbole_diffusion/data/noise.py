"""Random items injected into the training part of every user's sequence (``train_noise_ratio``).

Robust sequential recommenders (AsarRec, ADARec) are compared on a robustness curve: the same
model trained on data where a ratio r of random interactions has been added. The option works for
every model of the project, RecBole's built-ins included, in prefix and in sequence training,
because it edits the interaction table once, right after it is loaded and before RecBole builds
and splits it.

Definition: with a leave-one-out split, a user's last one or two interactions are the valid /
test targets; the ``n`` interactions before them are the training part. That part receives
``k`` random items, ``k = floor(r·n + u)`` with ``u ~ U[0, 1)`` (so that E[k] = r·n even for short
sequences, where ADARec's ``int(r·n)`` would add nothing), at positions drawn uniformly among
the ``n + k`` slots of the noisy training part. A noise item is uniform over the items the user
never interacts with (clean data, valid and test included). The held-out targets stay the user's
last interactions, unchanged; the histories the valid and test targets are predicted from are the
noisy training sequence (the noise is in the user's data, as in a real noisy log).

Deterministic given ``seed``: the draws use their own generator seeded from it.
"""

import numpy as np

from recbole_diffusion.errors import ConfigError

_HOLDOUT = {"valid_and_test": 2, "valid_only": 1, "test_only": 1}
_NOISE_STREAM = 0x6E6F69  # keeps the noise draws apart from every other use of ``seed``


def train_noise_ratio(config):
    """The configured ratio r, checked: a number in [0, 1) (``None`` counts as 0)."""
    ratio = config["train_noise_ratio"]
    if ratio is None:
        return 0.0
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ConfigError(
            f"train_noise_ratio: the ratio r of random items injected into each training sequence "
            f"(k = r·n items for n training interactions) must be a number in [0, 1); got {ratio!r}"
        )
    if ratio > 0:
        split = config["eval_args"]["split"]
        mode = split.get("LS") if isinstance(split, dict) else None
        if mode not in _HOLDOUT or config["eval_args"]["order"] != "TO" or config["eval_args"]["group_by"] != "user":
            raise ConfigError(
                "train_noise_ratio: noise is injected before the split and needs a chronological "
                "leave-one-out split grouped by user (eval_args: split {'LS': 'valid_and_test'}, "
                f"order TO, group_by user), so that the held-out targets are known; got eval_args={config['eval_args']}"
            )
    return float(ratio)


def _user_time_order(frame, uid_field, time_field):
    """Row order by (user, time), ties in file order: the order RecBole's stable sorts give."""
    order = np.arange(len(frame))
    if time_field is not None and time_field in frame:
        order = order[np.argsort(frame[time_field].to_numpy()[order], kind="stable")]
    return order[np.argsort(frame[uid_field].to_numpy()[order], kind="stable")]


def user_items(dataset):
    """Every item of every user in the loaded table, as CSR arrays ``(indptr, items)`` indexed by
    RecBole's internal user id: user u's items are ``items[indptr[u]:indptr[u + 1]]``.
    ``None`` for a table without user and item columns."""
    frame = dataset.inter_feat
    if dataset.uid_field not in frame or dataset.iid_field not in frame:
        return None
    users = frame[dataset.uid_field].to_numpy().astype(np.int64)
    items = frame[dataset.iid_field].to_numpy().astype(np.int64)
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    keep = np.r_[True, (users[1:] != users[:-1]) | (items[1:] != items[:-1])]
    users, items = users[keep], items[keep]
    indptr = np.zeros(dataset.user_num + 1, dtype=np.int64)
    np.add.at(indptr, users + 1, 1)
    return np.cumsum(indptr), items


def _draw_noise_items(rng, count, n_items, excluded):
    """``count`` items uniform over 1..n_items-1 minus ``excluded`` (a sorted array)."""
    drawn = np.empty(0, dtype=np.int64)
    while len(drawn) < count:
        candidates = rng.integers(1, n_items, size=2 * (count - len(drawn)) + 4)
        pos = np.searchsorted(excluded, candidates)
        hit = (pos < len(excluded)) & (excluded[np.minimum(pos, len(excluded) - 1)] == candidates)
        drawn = np.concatenate([drawn, candidates[~hit]])
    return drawn[:count]


def inject_train_noise(config, dataset):
    """Add ``train_noise_ratio`` random items to the training part of every user's sequence,
    in place on the loaded (not yet built) dataset; a no-op for ratio 0. Returns the dataset."""
    ratio = config.plugin_options["train_noise_ratio"]
    if ratio == 0:
        return dataset
    holdout = _HOLDOUT[config["eval_args"]["split"]["LS"]]
    frame = dataset.inter_feat
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    frame = frame.iloc[_user_time_order(frame, uid_field, dataset.time_field)].reset_index(drop=True)
    indptr, items = user_items(dataset)
    rng = np.random.default_rng(np.random.SeedSequence([int(config["seed"]), _NOISE_STREAM]))

    users = frame[uid_field].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    sources, noise_items = [], []  # per output row: source row (a neighbour for noise), noise item or 0
    for start, end in zip(starts, ends):
        n_train = max(end - start - holdout, 0)
        n_noise = int(np.floor(ratio * n_train + rng.random())) if n_train else 0
        rows = np.arange(start, end)
        if n_noise == 0:
            sources.append(rows)
            noise_items.append(np.zeros(len(rows), dtype=np.int64))
            continue
        is_noise = np.zeros(n_train + n_noise, dtype=bool)
        is_noise[rng.choice(n_train + n_noise, size=n_noise, replace=False)] = True
        # a noise row copies its predecessor (its time included; the first slot: its successor),
        # so RecBole's stable time sorts keep it exactly where it was drawn
        clean_before = np.cumsum(~is_noise) - 1  # index of the last clean item at or before each slot
        train_source = start + np.maximum(clean_before, 0)
        user = users[start]
        excluded = items[indptr[user] : indptr[user + 1]]
        noise = np.zeros(n_train + n_noise, dtype=np.int64)
        noise[is_noise] = _draw_noise_items(rng, n_noise, dataset.item_num, excluded)
        sources.append(np.concatenate([train_source, rows[n_train:]]))
        noise_items.append(np.concatenate([noise, np.zeros(end - start - n_train, dtype=np.int64)]))
    sources, noise_items = np.concatenate(sources), np.concatenate(noise_items)
    noisy = frame.iloc[sources].reset_index(drop=True)
    item_column = noisy[iid_field].to_numpy().copy()
    item_column[noise_items > 0] = noise_items[noise_items > 0]
    noisy[iid_field] = item_column
    dataset.inter_feat = noisy
    dataset.logger.info(
        f"train_noise_ratio={ratio}: injected {int((noise_items > 0).sum())} random items into "
        f"{len(frame)} interactions (valid/test targets untouched)"
    )
    return dataset
