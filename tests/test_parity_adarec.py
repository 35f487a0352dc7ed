"""benchmarks/parity/adarec.py without the authors' code: the conversion of our split to their input
format (the ICLRec one-line-per-user file) read with their split rule, the comparison with their copy
of the data, the user sample, their evaluation rule, the repair of their main.py, and the refusal of
an incomplete checkout."""

import os

import pytest

from conftest import raw_sequences, run_benchmark_script

WIDTH = 10  # a history width below the tiny users' lengths, so that RecBole's histories are cut


def their_user_seqs(text):
    """The file read as their ``utils.get_user_seqs`` reads it: one list of int items per line, the
    user's index its line number (0-based)."""
    sequences = []
    for line in text.splitlines(keepends=True):
        try:
            _, items = line.strip().split(" ", 1)
        except ValueError:
            continue
        sequences.append([int(item) for item in items.split(" ")])
    return sequences


def samples_by_user(split, config):
    """RecBole's samples of a split, per user token: [(history, target)] in split order."""
    feat = split.inter_feat
    tokens = split.field2id_token[split.uid_field]
    lists = feat[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]].numpy()
    lengths = feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
    out = {}
    for user, items, length, target in zip(feat[split.uid_field].numpy(), lists, lengths, feat[split.iid_field].numpy()):
        out.setdefault(str(tokens[user]), []).append(([int(i) for i in items[:length]], int(target)))
    return out


@pytest.fixture(scope="module")
def converted_split(tiny_data, tmp_path_factory):
    """The tiny split (histories cut to WIDTH) and its conversion, built in an empty folder."""
    from benchmarks.parity import adarec

    data_path, name = tiny_data
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("split"))
    try:
        config_dict = {**adarec.split_config_dict(data_path), "MAX_ITEM_LIST_LENGTH": WIDTH}
        config, train_data, valid_data, test_data = adarec.build_split(name, config_dict)
        return config, train_data, valid_data, test_data, adarec.to_authors_format(train_data, valid_data, test_data, config)
    finally:
        os.chdir(cwd)


def test_the_conversion_under_their_split_rule_is_recbole_leave_one_out(tiny_data, converted_split):
    data_path, name = tiny_data
    config, train_data, valid_data, test_data, converted = converted_split
    dataset = train_data._dataset
    user_token = dataset.field2id_token[dataset.uid_field]
    item_token = dataset.field2id_token[dataset.iid_field]
    lines = converted["text"].splitlines()
    sequences = their_user_seqs(converted["text"])
    assert len(sequences) == len(lines) == len(converted["user_ids"])

    # the same users, each line the user's whole sequence, oldest first, items 1-based (0 = padding)
    raw = raw_sequences(data_path, name)
    assert max(len(items) for items in raw.values()) > WIDTH + 2  # histories longer than the width are cut by RecBole
    users = [int(line.split(" ", 1)[0]) for line in lines]
    assert users == sorted(users) == list(converted["user_ids"])
    assert sorted(str(user_token[u]) for u in users) == sorted(raw)
    for user, sequence in zip(users, sequences):
        assert 1 <= min(sequence) and max(sequence) <= dataset.item_num - 1
        assert [str(item_token[i]) for i in sequence] == raw[str(user_token[user])], user

    # their datasets.py: train inputs s[:-3] with the next item at every position (s[1:-2]), valid s[-2]
    # after s[:-2], test s[-1] after s[:-1]; RecBole: the same targets, with the histories' last WIDTH items
    train, valid, test = (samples_by_user(split._dataset, config) for split in (train_data, valid_data, test_data))
    assert set(train) == set(valid) == set(test) == set(raw)
    for user, s in zip(users, sequences):
        token = str(user_token[user])
        inputs, targets = s[:-3], s[1:-2]
        assert [target for _, target in train[token]] == targets, token
        assert [history for history, _ in train[token]] == [(inputs[: j + 1])[-WIDTH:] for j in range(len(inputs))], token
        assert valid[token] == [(s[:-2][-WIDTH:], s[-2])], token
        assert test[token] == [(s[:-1][-WIDTH:], s[-1])], token


def test_their_copy_of_the_data_is_compared_user_by_user(tmp_path, converted_split):
    from benchmarks.parity import adarec

    _, train_data, _, _, converted = converted_split
    dataset = train_data._dataset
    user_token, item_token = dataset.field2id_token[dataset.uid_field], dataset.field2id_token[dataset.iid_field]
    lines = [" ".join([str(user_token[u]), *(str(item_token[i]) for i in s)]) for u, s in zip(converted["user_ids"], converted["sequences"])]
    theirs = tmp_path / "data" / "Beauty"
    theirs.parent.mkdir()
    theirs.write_text("\n".join(lines) + "\n\n")  # in tokens, with a trailing empty line (as their Beauty has)
    found = adarec.compare_with_their_file(converted, dataset, str(theirs))
    assert found["file"] == "data/Beauty" and found["their_users"] == found["our_users"] == found["same_sequences"] == len(lines)
    assert (found["different_sequences"], found["users_not_in_their_file"]) == (0, 0)
    assert not found["identical_file"]  # tokens are not RecBole's ids on this data
    theirs.write_text(converted["text"] + "\n")
    assert adarec.compare_with_their_file(converted, dataset, str(theirs))["identical_file"]

    first, second = lines[0].split(" "), lines[1].split(" ")
    lines[0] = " ".join(first[:-2] + [first[-1], first[-2]])  # two items swapped
    theirs.write_text("\n".join(lines[:-1]) + "\n")  # and the last user missing
    found = adarec.compare_with_their_file(converted, dataset, str(theirs))
    assert found["different_sequences"] == 1 and found["first_different_user"] == first[0]
    assert found["users_not_in_their_file"] == 1 and found["same_sequences"] == len(lines) - 2
    assert second  # the other users stay the same


def test_a_user_sample_keeps_those_users_rows_as_they_are(tmp_path, tiny_data):
    from benchmarks.parity import adarec

    data_path, name = tiny_data
    chosen = adarec.write_user_sample(data_path, name, 12, str(tmp_path / "a"))
    assert len(set(chosen)) == 12 and chosen == adarec.write_user_sample(data_path, name, 12, str(tmp_path / "b"))
    with open(os.path.join(data_path, name, f"{name}.inter"), encoding="utf-8") as handle:
        header, *rows = handle.readlines()
    expected = [header] + [row for row in rows if row.split("\t")[0] in set(chosen)]
    assert (tmp_path / "a" / name / f"{name}.inter").read_text().splitlines(keepends=True) == expected
    with pytest.raises(adarec.UsageError, match="--users 999"):
        adarec.write_user_sample(data_path, name, 999, str(tmp_path / "c"))


def test_their_rule_scores_history_items_zero_and_ranks_the_rest():
    import torch

    from benchmarks.parity import adarec

    scores = torch.tensor([[0.1, -0.5, 2.0, 1.0, -1.0], [0.0, 3.0, -0.2, -0.1, 0.5]])
    # row 0: item 2 (2.0) is history, so it drops to 0; target 3 (1.0) is then first
    # row 1: target 4 (0.5) is history too: 0, below item 1 (3.0) only (ties do not count)
    ranks = adarec.their_protocol_ranks(scores, torch.tensor([3, 4]), [[2], [4, 2]])
    assert ranks.tolist() == [1, 2]
    assert scores[0, 2] == 2.0  # the caller's scores are left alone


def test_their_main_py_is_repaired_only_where_it_is_broken():
    from benchmarks.parity import adarec

    head = "import argparse\nparser = argparse.ArgumentParser()\n"
    broken = head + 'parser.add_argument("--trade_off", type=float, default=1.0, ' + adarec.BROKEN_MAIN_LINE + 'parser.add_argument("--x")\n'
    fixed, patches = adarec.patched_main_source(broken)
    compile(fixed, "main.py", "exec")
    assert patches == ["src/main.py line 3: closed the parenthesis of the --trade_off argument"]
    assert adarec.patched_main_source(head) == (head, [])
    with pytest.raises(RuntimeError, match="does not compile"):
        adarec.patched_main_source(head + "def (\n")


def test_a_checkout_without_one_of_the_files_is_refused(tmp_path, tiny_data):
    from benchmarks.parity import adarec

    checkout = tmp_path / "ADARec"
    (checkout / "src").mkdir(parents=True)
    for name in adarec.AUTHORS_FILES:
        if name != "src/trainers.py":
            (checkout / name).write_text("# not the authors' code\n")
    results = tmp_path / "results"
    out = run_benchmark_script(os.path.join("parity", "adarec.py"), tmp_path, f"--authors_repo={checkout}",
                               f"--data_path={tiny_data[0]}", f"--dataset={tiny_data[1]}", f"--results_dir={results}")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: --authors_repo") and "src/trainers.py missing" in out.stderr
    assert "src/models.py missing" not in out.stderr and "src/models.py" in out.stderr  # named among what a checkout has
    assert not results.exists()
