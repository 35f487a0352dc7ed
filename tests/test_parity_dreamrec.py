"""benchmarks/parity/dreamrec.py without the authors' code: the conversion of our split to their input
format, the parsing of what their script prints, and the refusal of an incomplete checkout."""

import os

from conftest import raw_sequences, run_benchmark_script

SEQ_SIZE = 10


def expected_row(history, target, item_id, item_num):
    """The authors' row of a target and its history (tokens), as the docstring defines it."""
    seq = [item_id[token] - 1 for token in history[-SEQ_SIZE:]]
    return seq + [item_num] * (SEQ_SIZE - len(seq)), len(seq), item_id[target] - 1


def rows_by_user(frame, user_ids, tokens):
    out = {}
    for uid, seq, length, target in zip(user_ids, frame["seq"], frame["len_seq"], frame["next"]):
        out.setdefault(str(tokens[uid]), []).append((list(seq), int(length), int(target)))
    return out


def test_the_conversion_holds_recbole_split_in_the_authors_format(tiny_data):
    from benchmarks.parity import dreamrec

    data_path, name = tiny_data
    config, train_data, valid_data, test_data = dreamrec.build_split(name, dreamrec.split_config_dict(data_path))
    frames = dreamrec.to_authors_format(train_data, valid_data, test_data, config)
    dataset = train_data._dataset
    item_id = dataset.field2token_id[dataset.iid_field]
    tokens = dataset.field2id_token[dataset.uid_field]
    item_num = dataset.item_num - 1  # RecBole's ids 1..n-1 become 0..n-2; the padding is n-1
    statis = frames["data_statis"]
    assert list(statis.columns) == ["seq_size", "item_num"]
    assert int(statis["seq_size"][0]) == SEQ_SIZE and int(statis["item_num"][0]) == item_num
    for split in ("train_data", "val_data", "test_data"):
        assert list(frames[split].columns) == ["seq", "len_seq", "next"]

    sequences = raw_sequences(data_path, name)
    assert max(len(items) for items in sequences.values()) > SEQ_SIZE + 2  # histories longer than 10 are cut
    expected = {"train_data": {}, "val_data": {}, "test_data": {}}
    for user, items in sequences.items():
        expected["test_data"][user] = [expected_row(items[:-1], items[-1], item_id, item_num)]
        expected["val_data"][user] = [expected_row(items[:-2], items[-2], item_id, item_num)]
        # every prefix of the training sequence (all but the valid and test items) with its next item, in time order
        expected["train_data"][user] = [expected_row(items[:j], items[j], item_id, item_num) for j in range(1, len(items) - 2)]
    for split, users in (("train_data", "train_users"), ("val_data", "val_users"), ("test_data", "test_users")):
        got = rows_by_user(frames[split], frames[users], tokens)
        assert set(got) == set(expected[split]), split
        for user, rows in expected[split].items():
            assert got[user] == rows, (split, user)
    assert len(frames["train_data"]) == len(train_data._dataset.inter_feat)

    # --eval_users: the same users in val and test, a sample of the test users, fixed
    chosen = dreamrec.choose_users(frames["test_users"], 30)
    assert len(set(chosen)) == 30 and list(chosen) == list(dreamrec.choose_users(frames["test_users"], 30))
    val = dreamrec.keep_users(frames["val_data"], frames["val_users"], chosen)
    test = dreamrec.keep_users(frames["test_data"], frames["test_users"], chosen)
    assert len(val) == len(test) == 30
    for frame, split, users in ((val, "val_data", "val_users"), (test, "test_data", "test_users")):
        order = [str(tokens[u]) for u in frames[users] if u in set(chosen)]
        rows = list(zip(map(list, frame["seq"]), map(int, frame["len_seq"]), map(int, frame["next"])))
        assert rows == [expected[split][user][0] for user in order]


def test_what_their_script_prints_is_parsed():
    from benchmarks.parity import dreamrec

    printed = [
        "Epoch 000; Train loss: 1.0906; Time cost: 00: 00: 01",
        "Epoch 009; Train loss: 0.5000; Time cost: 00: 00: 01",
        "-------------------------- VAL PHRASE --------------------------",
        "HR@10      NDCG@10    HR@20      NDCG@20    HR@50      NDCG@50   ",
        "0.010000   0.003659   0.015000   0.004836   0.040000   0.009849  ",
        "-------------------------- TEST PHRASE -------------------------",
        "HR@10      NDCG@10    HR@20      NDCG@20    HR@50      NDCG@50   ",
        "0.020000   0.006505   0.025000   0.008843   0.065000   0.016684  ",
        "Evalution cost: 00: 00: 30",
        "----------------------------------------------------------------",
    ]
    parsed = dreamrec.parse_authors_output([(float(t), line) for t, line in enumerate(printed)])
    assert [(e["epoch"], e["loss"]) for e in parsed["epochs"]] == [(1, 1.0906), (10, 0.5)]
    val, test = parsed["evaluations"]
    assert (val["epoch"], val["split"], test["split"]) == (10, "val", "test")
    assert test["metrics"] == {"hit@10": 0.02, "ndcg@10": 0.006505, "hit@20": 0.025, "ndcg@20": 0.008843, "hit@50": 0.065, "ndcg@50": 0.016684}
    assert (test["start"], test["end"]) == (5.0, 7.0)


def test_a_checkout_without_one_of_the_files_is_refused(tmp_path, tiny_data):
    checkout = tmp_path / "DreamRec"
    checkout.mkdir()
    for name in ("DreamRec.py", "utility.py"):
        (checkout / name).write_text("# not the authors' code\n")
    results = tmp_path / "results"
    out = run_benchmark_script(os.path.join("parity", "dreamrec.py"), tmp_path, f"--authors_repo={checkout}",
                               f"--data_path={tiny_data[0]}", f"--dataset={tiny_data[1]}", f"--results_dir={results}")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: --authors_repo") and "Modules_ori.py" in out.stderr and "utility.py missing" not in out.stderr
    assert not results.exists()
