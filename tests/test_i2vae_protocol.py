"""benchmarks/i2vae_protocol.py: the row settings each entry gets (and i2VAE's at the authors'
settings), the table's two selection rules (the checkpoint chosen on valid; the authors' maximum
over epochs on the test rows), and the most-popular floor's counts and ranks."""

import collections
import os

import pytest

from test_cross_domain_rows import prepare_rows, split_samples, write_row_dataset

from benchmarks import common as bench
from benchmarks import i2vae_protocol as protocol


def test_each_entry_reads_the_rows_of_its_domain():
    entries = [{"label": label, "model": label.split("@")[0]} for label in protocol.ENTRIES]
    settings = bench.parse_model_args([f"{label}:{protocol.row_split(label)}" for label in protocol.ENTRIES], entries)
    values = {label: eval(settings[label]["row_split"]) for label in protocol.ENTRIES}  # noqa: S307 -- RecBole's Config does the same
    assert values["i2VAE"] == {"train": "raw/cloth_sport_train.csv", "test": "raw/cloth_sport_test_csu.csv"}
    assert values["SASRec@cloth"]["domain_id"] == 0 and values["SASRec@sport"]["domain_id"] == 1
    assert values["SASRec@cloth"]["train"] == "../cloth-sport/raw/cloth_sport_train.csv"
    assert all(settings[label]["train_mode"] == "prefix" for label in protocol.ENTRIES)  # one sample per train row


def run(final, per_epoch):
    key = "{} (cloth, cold-start)"
    return {
        "status": "ok",
        "test_result": {key.format(m): final for m in protocol.METRICS},
        "test_results_per_epoch": [{key.format(m): value for m in protocol.METRICS} for value in per_epoch],
    }


def test_the_table_gives_the_valid_choice_and_the_maximum_over_epochs_on_test():
    runs = {("i2VAE", 1): run(0.02, [0.01, 0.05, 0.03]), ("i2VAE", 2): run(0.04, [0.02, 0.03, 0.07])}
    lines = protocol.table(runs)
    row = next(line for line in lines if line.startswith("| cloth | cold-start | i2VAE |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == "2"
    assert cells[4] == cells[5] == "0.0300 ± 0.0141"  # the chosen checkpoint's test metrics
    assert cells[6] == cells[7] == "0.0600 ± 0.0141"  # max over epochs: 0.05 and 0.07
    empty = next(line for line in lines if line.startswith("| cloth | cold-start | SASRec@cloth |"))
    assert "| 0 | – | – | – | – |" in empty


def test_the_authors_settings_reach_i2vae_alone_and_a_folder_of_their_own():
    entries = [{"label": label, "model": label.split("@")[0]} for label in protocol.ENTRIES]
    given = [protocol.model_args(label, "authors") for label in protocol.ENTRIES]
    settings = bench.parse_model_args(given, entries)
    assert {key: settings["i2VAE"][key] for key in protocol.AUTHORS_SETTINGS} == protocol.AUTHORS_SETTINGS
    assert settings["i2VAE"]["hidden_size"] == "128" and settings["i2VAE"]["kl_weight"] == "1.0"
    assert eval(settings["i2VAE"]["row_split"])["test"] == "raw/cloth_sport_test_csu.csv"  # noqa: S307 -- the rows still parse
    assert not set(protocol.AUTHORS_SETTINGS) & set(settings["SASRec@cloth"])
    assert protocol.folder_name("sampled_rows", "authors") == "sampled_rows-authors-settings"
    assert protocol.folder_name("sampled_rows") == "sampled_rows"
    assert protocol.build_parser().parse_args(["--settings", "authors"]).models is None  # main() picks i2VAE alone


def test_the_page_shows_the_authors_settings_table_only_once_run(monkeypatch, tmp_path):
    stored = {
        "sampled_rows": {("i2VAE", 1): run(0.02, [0.02]), ("SASRec@cloth", 1): run(0.01, [0.01])},
        "sampled_rows-authors-settings": {("i2VAE", 1): run(0.005, [0.006])},
    }
    monkeypatch.setattr(protocol.board, "stored_runs", lambda folder, dataset: stored.get(os.path.basename(folder), {}))
    monkeypatch.setattr(protocol, "PAGE", str(tmp_path / "page.md"))
    protocol.render()
    page = (tmp_path / "page.md").read_text(encoding="utf-8")
    assert page.count("i2VAE at the authors' settings") == 1  # sampled_rows only: the others have no such runs
    section = page.split("i2VAE at the authors' settings")[1]
    assert "| cloth | cold-start | i2VAE | 1 | 0.0050 | 0.0050 | 0.0060 | 0.0060 |" in section
    assert "| cloth | cold-start | SASRec@cloth | 1 | 0.0100 |" in section  # the default folder's SASRec beside it


def test_the_popularity_floor_counts_the_train_parts_targets_only(tmp_path, in_tmp_dir):
    config, dataset, train, valid, test = prepare_rows(write_row_dataset(tmp_path))
    parts = split_samples((config, dataset, train, valid, test))
    counts = protocol.popularity_counts(train)
    ids = dataset.field2token_id["item_id"]
    expected = collections.Counter(ids[str(sample[0])] for sample in parts["train"].values())
    assert counts[0] == float("-inf")
    assert {item: int(counts[item]) for item in expected} == dict(expected)
    assert counts[1:].sum() == len(parts["train"])  # no valid or test target counted
    held_out = {ids[str(s[0])] for part in ("valid", "test") for s in parts[part].values()} - set(expected)
    assert held_out and all(counts[item] == 0 for item in held_out)
    result, rows = protocol.popularity_result(config, train, test)
    assert {"hit@10 (cloth, cold-start)", "ndcg@10 (sport, all)"} <= set(result)
    # each row ranks its domain's items by the counts: its target's rank lies between 1 + the items
    # counted more often than the target and 1 + those counted at least as often (ties)
    ranks = {(int(user), dataset.domain_display_names.index(domain)): int(rank)
             for user, domain, rank in zip(rows["user"], rows["domain"], rows["rank"])}
    assert set(ranks) == set(parts["test"])
    for (user, domain), sample in parts["test"].items():
        target = ids[str(sample[0])]
        others = counts[[i for i in range(1, dataset.item_num) if dataset.domain_items[domain][i] and i != target]]
        assert 1 + int((others > counts[target]).sum()) <= ranks[(user, domain)] <= 1 + int((others >= counts[target]).sum())


@pytest.mark.parametrize("argv, message", [
    (["--data_path", "x", "--popularity", "--settings", "authors"], "--popularity trains no model"),
    (["--data_path", "x", "--popularity", "--models", "i2VAE"], "--popularity trains no model"),
    (["--data_path", "no-such-folder", "--popularity"], "has no cloth-sport-cloth or cloth-sport-sport folder"),
])
def test_the_popularity_floor_refuses_what_it_would_ignore(argv, message):
    with pytest.raises(SystemExit, match=message):
        protocol.main(argv)
