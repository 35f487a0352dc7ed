"""The i2VAE authors' row protocol (option row_split, docs/cross-domain.md): every sample is its CSV
row, the validation part is a seeded share of the train rows, a per-domain file gets its domain's
rows, the pseudo-sequence generator sees no held-out target, models train on it, bad rows are refused."""

import csv
import json
import os
import pathlib
import random

import numpy as np
import pytest
import torch

from conftest import tiny_config
from test_cross_domain import cd_config, prepare, two_domain_sequences, write_two_domain_dataset
from test_i2vae import FAST

# user 200's cloth target (5) occurs twice before it: both copies leave its history
SEQUENCES = {**two_domain_sequences(), 200: ([5, 7, 5, 9, 5], [101, 102, 103])}
ROW_SPLIT = {"train": "rows_train.csv", "test": "rows_test.csv", "valid_ratio": 0.2}
MAX_LEN = 10  # cd_config's MAX_ITEM_LIST_LENGTH
NAMES = ("cloth", "sport")


def make_rows(sequences=SEQUENCES, seed=7):
    """(train rows, test rows) in the authors' format: one row per (user, domain with items), a
    quarter of them test rows (user 200's rows train rows), a third of the test rows of users with both domains cut to the target
    (cold-start). A row is ``{"user", "seq_d1", "seq_d2", "domain_id"}`` with Python lists."""
    rng = random.Random(seed)
    train, test = [], []
    for user, (cloth, sport) in sequences.items():
        for domain, items in enumerate((cloth, sport)):
            if not items:
                continue
            row = {"user": user, "seq_d1": list(cloth), "seq_d2": list(sport), "domain_id": domain}
            if user != 200 and rng.random() < 0.25:
                if cloth and sport and len(items) > 1 and rng.random() < 0.34:
                    row[f"seq_d{domain + 1}"] = items[-1:]
                test.append(row)
            else:
                train.append(row)
    return train, test


def write_rows(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "seq_d1", "seq_d2", "domain_id"])
        for row in rows:
            writer.writerow([row["user"], json.dumps(row["seq_d1"]), json.dumps(row["seq_d2"]), row["domain_id"]])


def write_row_dataset(folder, name="rows", sequences=SEQUENCES, rows=None):
    """The two-domain atomic file of ``sequences`` and its row files beside it."""
    data = write_two_domain_dataset(folder, name, sequences)
    train, test = rows or make_rows(sequences)
    write_rows(os.path.join(folder, name, ROW_SPLIT["train"]), train)
    write_rows(os.path.join(folder, name, ROW_SPLIT["test"]), test)
    return data


def expected_sample(row, only_domain=None):
    """What the row protocol makes of ``row``, in raw tokens: (target, own history, other context)."""
    domain = row["domain_id"]
    items = row[f"seq_d{domain + 1}"]
    target = items[-1]
    own = [i for i in items[:-1] if i != target]
    other = [] if only_domain is not None else row[f"seq_d{2 - domain}"]
    return target, own, other


def samples_by_row(split_dataset):
    """{(user, domain): (target, own history, other context, merged input, history length)} in raw tokens."""
    d, feat = split_dataset, split_dataset.inter_feat

    def tokens(ids):
        return [int(d.id2token("item_id", int(i))) for i in ids if int(i) > 0]

    out = {}
    for row in range(len(feat)):
        domain = int(feat["target_domain"][row])
        lists = [tokens(feat[f"{p}item_id_list"][row][: int(feat[f"{p}item_length"][row])]) for p in ("x_", "y_")]
        key = (int(d.id2token("user_id", int(feat["user_id"][row]))), domain)
        assert key not in out, f"two samples of {key}"
        out[key] = (int(d.id2token("item_id", int(feat["item_id"][row]))), lists[domain], lists[1 - domain],
                    tokens(feat["item_id_list"][row][: int(feat["item_length"][row])]), int(feat["domain_history_length"][row]))
    return out


def prepare_rows(data, model="SASRec", row_split=None, **overrides):
    return prepare(data, model=model, row_split={**ROW_SPLIT, **(row_split or {})}, **overrides)


def split_samples(prepared):
    """{train, valid, test: samples_by_row} of what ``prepare`` returned."""
    return dict(zip(("train", "valid", "test"), (samples_by_row(loader._dataset) for loader in prepared[2:])))


@pytest.fixture(scope="module")
def rows_data(tmp_path_factory):
    return write_row_dataset(tmp_path_factory.mktemp("rows"))


# ----------------------------------------------------------------------------- samples
def test_every_sample_is_its_row(rows_data, in_tmp_dir):
    train_rows, test_rows = make_rows()
    parts = split_samples(prepare_rows(rows_data))
    for rows, samples in ((train_rows, {**parts["train"], **parts["valid"]}), (test_rows, parts["test"])):
        assert len(samples) == len(rows)
        for row in rows:
            target, own, other = expected_sample(row)
            got_target, got_own, got_other, merged, history = samples[(row["user"], row["domain_id"])]
            assert (got_target, got_own, got_other) == (target, own[-MAX_LEN:], other[-MAX_LEN:]), row
            assert merged == (other + own)[-MAX_LEN:]  # the other domain's block, then the own history
            assert history == len(own)  # untruncated
    # what the data exercises: the target's copies removed, lists truncated, cold-start test rows
    removed = [r for r in train_rows + test_rows if len(expected_sample(r)[1]) < len(r[f"seq_d{r['domain_id'] + 1}"]) - 1]
    assert {r["user"] for r in removed} >= {1, 200}
    assert any(len(s[2]) == MAX_LEN for s in parts["train"].values())
    assert sum(s[4] == 0 for s in parts["test"].values()) >= 3


def test_the_validation_part_is_a_seeded_share_of_the_train_rows(rows_data, in_tmp_dir):
    train_rows, _ = make_rows()
    first = split_samples(prepare_rows(rows_data))
    again = split_samples(prepare_rows(rows_data))
    other_seed = split_samples(prepare_rows(rows_data, seed=7))
    train_keys = {(row["user"], row["domain_id"]) for row in train_rows}
    assert set(first["valid"]) | set(first["train"]) == train_keys
    assert not set(first["valid"]) & set(first["train"])
    assert len(first["valid"]) == round(0.2 * len(train_rows))
    assert first == again
    assert set(other_seed["valid"]) != set(first["valid"])
    assert set(other_seed["valid"]) | set(other_seed["train"]) == train_keys


def test_a_per_domain_file_gets_the_rows_of_its_domain(rows_data, in_tmp_dir):
    """cloth-sport-cloth / -sport with the rows of cloth-sport: the same rows, targets, histories and
    validation rows as that domain's samples of the two-domain file, without the other domain."""
    both = split_samples(prepare_rows(rows_data))
    data_path, name = rows_data
    relative = {part: os.path.join("..", name, ROW_SPLIT[part]) for part in ("train", "test")}
    for domain, title in enumerate(NAMES):
        single = write_two_domain_dataset(pathlib.Path(data_path), f"{name}-{title}", SEQUENCES, domain_column=False, only_domain=domain)
        prepared = prepare(
            single, row_split={**ROW_SPLIT, **relative, "domain_id": domain}, domain_field=None, domain_names=None,
            dataset_domain=title, load_col={"inter": ["user_id", "item_id", "timestamp"]},
        )
        assert prepared[1].domain_display_names == [title]
        for part, samples in split_samples(prepared).items():
            expected = {user: (s[0], s[1], [], s[1], s[4]) for (user, d), s in both[part].items() if d == domain}
            assert {user: s for (user, d), s in samples.items() if d == 0} == expected, (title, part)
            assert len(samples) == len(expected)


def test_the_generator_sees_no_valid_or_test_target(rows_data, in_tmp_dir):
    """dataset.train_interactions (what i2VAE's LightGCN is fitted on): every row's inputs (what its
    prediction reads) and the training rows' targets, less the valid and test targets, also where
    the authors' data carries one as the other domain's context of the same user's training row."""
    _, dataset, *_ = prepared = prepare_rows(rows_data)
    parts = split_samples(prepared)
    users, items, domains = dataset.train_interactions
    seen = {(int(dataset.id2token("user_id", u)), int(d), int(dataset.id2token("item_id", i))) for u, i, d in zip(users, items, domains)}
    held_out = {(user, d, s[0]) for part in ("valid", "test") for (user, d), s in parts[part].items()}
    assert not seen & held_out
    expected = set()
    train_rows, test_rows = make_rows()
    for row in train_rows + test_rows:  # the untruncated lists
        user, domain = row["user"], row["domain_id"]
        target, own, other = expected_sample(row)
        expected |= {(user, domain, item) for item in own} | {(user, 1 - domain, item) for item in other}
        if (user, domain) in parts["train"]:
            expected.add((user, domain, target))
    assert seen == expected - held_out
    assert (expected & held_out), "the data has a held-out target inside a training row"
    train_users = {user for user, _ in parts["train"]}
    assert {user for user, _ in parts["test"]} - train_users, "the data has users only in the test file"


# ----------------------------------------------------------------------------- evaluation and runs
def test_candidates_full_ranking_and_sampled(rows_data, in_tmp_dir):
    _, dataset, _, _, test = prepare_rows(rows_data)
    for interaction, hidden, _, positive_i in test:
        for row in range(len(interaction)):
            shown = torch.nonzero(~hidden[row]).squeeze(1).numpy()
            assert np.array_equal(shown, np.flatnonzero(dataset.domain_items[int(interaction["target_domain"][row])]))
            assert not hidden[row, positive_i[row]]
    _, dataset, _, _, test = prepare_rows(rows_data, eval_negatives=7)
    check_sampled(dataset, test, 7)


def check_sampled(dataset, loader, k, pools=None):
    """Every row of ``loader`` ranks its positive among ``k`` negatives (fewer when fewer exist) of its
    domain's items the user never interacted with, and, given ``pools`` (per domain), in the pool.
    Returns how many rows had unseen items outside their pool."""
    indptr, user_items = dataset.user_items
    outside = 0
    for interaction, hidden, _, positive_i in loader:
        for row in range(len(interaction)):
            shown = set(torch.nonzero(~hidden[row]).squeeze(1).tolist())
            user, domain = int(interaction["user_id"][row]), int(interaction["target_domain"][row])
            negatives = shown - {int(positive_i[row])}
            unseen = set(np.flatnonzero(dataset.domain_items[domain]).tolist()) - set(user_items[indptr[user] : indptr[user + 1]].tolist())
            allowed = unseen if pools is None else unseen & pools[domain]
            assert int(positive_i[row]) in shown and negatives <= allowed and len(negatives) == min(k, len(allowed))
            outside += len(unseen - allowed) > 0
    return outside


def test_sampled_negatives_can_come_from_the_evaluated_parts_rows_only(tmp_path, in_tmp_dir):
    """eval_negative_pool: rows: the negatives of a test row are items of its domain that occur in the
    test rows' lists (the authors' test pool), less the user's items; each part has its own pool."""
    # items that only user 200 (whose rows are train rows) has: in no test row's list
    sequences = {**SEQUENCES, 200: ([5, 7, 5, 9, 5, 801, 802], [101, 102, 103, 851])}
    data = write_row_dataset(tmp_path, sequences=sequences)
    _, dataset, _, valid, test = prepare_rows(data, eval_negatives=7, eval_negative_pool="rows")
    _, test_rows = make_rows(sequences)
    ids = dataset.field2token_id["item_id"]
    pools = [{ids[str(item)] for row in test_rows for item in row[f"seq_d{d + 1}"]} for d in (0, 1)]
    assert check_sampled(dataset, test, 7, pools)  # the test rows do not hold every item: narrower than the default's pool
    assert not np.array_equal(valid._dataset.row_items, test._dataset.row_items)


@pytest.mark.parametrize("overrides, message", [
    ({"eval_negative_pool": "test"}, "eval_negative_pool must be all"),
    ({"eval_negative_pool": "rows"}, "set eval_negatives"),
])
def test_a_bad_negative_pool_is_refused(rows_data, in_tmp_dir, overrides, message):
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        prepare_rows(rows_data, **overrides)


@pytest.mark.parametrize("option, value", [("eval_negatives", 7), ("eval_negative_pool", "rows"), ("row_split", ROW_SPLIT)])
def test_a_cross_domain_option_on_a_plain_dataset_is_refused_not_ignored(tiny_data, in_tmp_dir, option, value):
    from recbole_diffusion.config import Config
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match=f"{option} is an option of a cross-domain dataset"):
        Config(model="SASRec", config_dict=tiny_config(tiny_data, **{option: value}))


def test_the_rows_pool_needs_the_row_protocol(rows_data, in_tmp_dir):
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match="only row_split has"):
        prepare(rows_data, eval_negatives=7, eval_negative_pool="rows")


@pytest.mark.parametrize("model", ["i2VAE", "SASRec"])
def test_a_model_trains_and_reports_the_rows_groups(rows_data, in_tmp_dir, one_thread, model):
    from recbole_diffusion.quick_start import run

    settings = FAST if model == "i2VAE" else {}
    config = cd_config(rows_data, model, row_split=ROW_SPLIT, **settings)
    result = run(model=model, config_dict=config, saved=False, verbose=False)
    test = dict(result["test_result"])
    _, test_rows = make_rows()
    for domain, name in enumerate(NAMES):
        own = [expected_sample(row)[1] for row in test_rows if row["domain_id"] == domain]
        counts = {"all": len(own), "cold-start": sum(not o for o in own), "long-tailed": sum(1 <= len(o) <= 2 for o in own)}
        assert counts["cold-start"] > 0 and counts["long-tailed"] > 0
        for group, count in counts.items():
            assert test[f"users ({name}, {group})"] == count, (name, group)
            assert 0.0 <= test[f"hit@10 ({name}, {group})"] <= 1.0


# ----------------------------------------------------------------------------- errors
def row_text(rows):
    train = rows[0]
    return [["user_id", "seq_d1", "seq_d2", "domain_id"]] + [[r["user"], json.dumps(r["seq_d1"]), json.dumps(r["seq_d2"]), r["domain_id"]] for r in train]


BAD_ROWS = [
    # (what to do to the 3rd train row (line 4), the message)
    ("seq_d1", "[1, 2", r"row 3 \(line 4\), field seq_d1: not a JSON list of item ids"),
    ("seq_d2", '{"a": 1}', r"row 3 \(line 4\), field seq_d2: not a JSON list"),
    ("seq_d1", "[1.5]", r"row 3 \(line 4\), field seq_d1: not a JSON list of item ids \(integers or strings\)"),
    ("domain_id", "2", r"row 3 \(line 4\), field domain_id: '2' is not a domain"),
    ("domain_id", "", r"row 3 \(line 4\), field domain_id: empty or missing"),
    ("user_id", "99999", r"row 3 \(line 4\), field user_id: user '99999' is not in .*rows\.inter"),
    ("seq_d1", "[1, 77777]", r"row 3 \(line 4\), field seq_d1: item '77777' is not in .*rows\.inter"),
    ("seq_d1", "[1, 101]", r"row 3 \(line 4\), field seq_d1: item '101' never occurs in domain cloth"),
    ("target", "[]", r"row 3 \(line 4\), field seq_d\d: the target domain's list is empty"),
]


@pytest.mark.parametrize("field, value, message", BAD_ROWS, ids=[f"{f}={v}" for f, v, _ in BAD_ROWS])
def test_a_bad_row_is_refused_naming_file_row_and_field(tmp_path, in_tmp_dir, field, value, message):
    from recbole_diffusion.errors import DataError

    data = write_row_dataset(tmp_path)
    lines = row_text(make_rows())
    header = lines[0]
    column = header.index(field) if field != "target" else 1 + int(lines[3][3])
    lines[3][column] = value
    path = os.path.join(tmp_path, "rows", ROW_SPLIT["train"])
    with open(path, "w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows(lines)
    before = sorted(os.listdir(os.path.join(tmp_path, "rows")))
    with pytest.raises(DataError, match=r"rows_train\.csv, " + message):
        prepare_rows(data)
    assert sorted(os.listdir(os.path.join(tmp_path, "rows"))) == before  # nothing written beside the data


def test_a_missing_file_or_column_is_refused(tmp_path, in_tmp_dir):
    from recbole_diffusion.errors import DataError

    data = write_row_dataset(tmp_path)
    with pytest.raises(DataError, match=r"nowhere\.csv: row_split names this file, which does not exist"):
        prepare_rows(data, row_split={"test": "nowhere.csv"})
    path = os.path.join(tmp_path, "rows", "no_domain.csv")
    with open(path, "w", encoding="utf-8") as out:
        out.write('user_id,seq_d1,seq_d2\n2,"[1]","[]"\n')
    with pytest.raises(DataError, match=r"no_domain\.csv, line 1: no column domain_id"):
        prepare_rows(data, row_split={"test": "no_domain.csv"})


def test_a_target_missing_from_the_interaction_file_is_refused(tmp_path, in_tmp_dir):
    from recbole_diffusion.errors import DataError

    train, test = make_rows()
    row = next(r for r in train if r["domain_id"] == 0 and len(r["seq_d1"]) >= 2 and r["user"] != 1)  # user 1 has every item
    row["seq_d1"] = row["seq_d1"][:-1] + [next(i for i in range(1, 31) if i not in row["seq_d1"])]
    data = write_row_dataset(tmp_path, rows=(train, test))
    with pytest.raises(DataError, match=r"field seq_d1: the target item '\d+' is not an interaction of user"):
        prepare_rows(data)


@pytest.mark.parametrize("row_split, overrides, message", [
    ("raw/train.csv", {}, "row_split must be ~"),
    ({"train": "a.csv"}, {}, "row_split test: the path"),
    ({**ROW_SPLIT, "valid": 0.1}, {}, "row_split: unknown key"),
    ({**ROW_SPLIT, "valid_ratio": 1}, {}, r"row_split valid_ratio: .* \(0, 1\)"),
    ({**ROW_SPLIT, "domain_id": 0}, {}, "row_split domain_id is for a per-domain file"),
    (ROW_SPLIT, {"domain_field": None, "domain_names": None, "dataset_domain": "cloth"}, "row_split domain_id: a per-domain file"),
    (ROW_SPLIT, {"train_noise_ratio": 0.2}, "train_noise_ratio: noise is injected"),
    (ROW_SPLIT, {"sparse_users": [3]}, "sparse_users: its groups are users with few training interactions"),
    ({**ROW_SPLIT, "domain_id": 0}, {"domain_field": None, "domain_names": None, "dataset_domain": "cloth", "train_mode": "sequence"},
     "train_mode: sequence trains every position"),
])
def test_row_split_options_are_checked(rows_data, in_tmp_dir, row_split, overrides, message):
    from recbole_diffusion.config import Config
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        Config(model="SASRec", config_dict=cd_config(rows_data, row_split=row_split, **overrides))


def test_a_valid_ratio_that_leaves_no_row_is_refused(rows_data, in_tmp_dir):
    from recbole_diffusion.errors import DataError

    with pytest.raises(DataError, match=r"rows_train\.csv: row_split valid_ratio 0\.001 .* both parts need at least one"):
        prepare_rows(rows_data, row_split={"valid_ratio": 0.001})
