"""Tests for the dataset converter (recbole_diffusion/data/convert.py and dataset/convert.py)."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from recbole_diffusion.data import convert as convert_module
from recbole_diffusion.data.convert import ConversionError, convert, convert_with_summary

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(REPO_ROOT, "dataset", "convert.py")


def write(path, text, mode="w"):
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_inter(path):
    return pd.read_csv(path, sep="\t", dtype=str)


def folder_listing(root):
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, dirs, files in os.walk(root)
        for name in dirs + files
    )


# --- seq format -------------------------------------------------------------------------------


def test_seq_round_trip_keeps_order_and_numbers_positions(tmp_path):
    source = write(tmp_path / "Beauty.txt", "1 5 3 9\n2 3 3\n\n10 7\n")
    path = convert("seq", source, tmp_path / "out", "beauty")

    assert path == str(tmp_path / "out" / "beauty" / "beauty.inter")
    with open(path, encoding="utf-8") as handle:
        assert handle.readline() == "user_id:token\titem_id:token\ttimestamp:float\n"
    frame = read_inter(path)
    assert list(frame.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert frame.values.tolist() == [
        ["1", "5", "0"], ["1", "3", "1"], ["1", "9", "2"],
        ["2", "3", "0"], ["2", "3", "1"],  # a repeated item is kept, not merged
        ["10", "7", "0"],
    ]


def test_seq_summary_counts(tmp_path):
    source = write(tmp_path / "s.txt", "a x y\nb y z w\n")
    summary = convert_with_summary("seq", source, tmp_path, "s")
    assert (summary.n_users, summary.n_items, summary.n_interactions) == (2, 4, 5)
    assert "2 users, 4 items, 5 interactions" in summary.line()


def test_seq_k_core_renumbers_positions(tmp_path):
    # Item "rare" occurs once; with k=2 it goes and user 1's positions close the gap.
    source = write(tmp_path / "s.txt", "1 a rare b\n2 a b\n")
    frame = read_inter(convert("seq", source, tmp_path, "s", k_core=2))
    assert frame.values.tolist() == [
        ["1", "a", "0"], ["1", "b", "1"], ["2", "a", "0"], ["2", "b", "1"],
    ]


# --- amazon-csv format ------------------------------------------------------------------------

AMAZON_ROWS = (
    "A2,B9,5.0,1300000000\n"
    "A1,B1,4.0,1200000500\n"
    "A1,B2,2.0,1200000000\n"
    "A2,B1,3.0,1300000000\n"  # same timestamp as A2's first row: file order must win
    "A1,B3,1.0,1200000500\n"  # same timestamp as A1,B1
)


@pytest.mark.parametrize("header", ["", "user,item,rating,timestamp\n",
                                    "reviewerID,asin,overall,unixReviewTime\n"])
def test_amazon_csv_round_trip(tmp_path, header):
    source = write(tmp_path / "ratings_Beauty.csv", header + AMAZON_ROWS)
    path = convert("amazon-csv", source, tmp_path, "beauty")

    frame = read_inter(path)
    assert list(frame.columns) == [
        "user_id:token", "item_id:token", "rating:float", "timestamp:float",
    ]
    # Users in order of first appearance; within a user by time, ties in file order.
    assert frame.values.tolist() == [
        ["A2", "B9", "5", "1300000000"],
        ["A2", "B1", "3", "1300000000"],
        ["A1", "B2", "2", "1200000000"],
        ["A1", "B1", "4", "1200000500"],
        ["A1", "B3", "1", "1200000500"],
    ]


def test_amazon_csv_keeps_duplicates_and_fractional_values(tmp_path):
    source = write(tmp_path / "r.csv", "u,i,4.5,10.25\r\nu,i,4.5,10.25\r\nu,j,3,11\r\n")
    frame = read_inter(convert("amazon-csv", source, tmp_path, "r"))
    assert frame.values.tolist() == [
        ["u", "i", "4.5", "10.25"], ["u", "i", "4.5", "10.25"], ["u", "j", "3", "11"],
    ]


def test_min_rating_keeps_ratings_at_or_above_threshold(tmp_path):
    source = write(tmp_path / "r.csv", "u,a,1,1\nu,b,2.9,2\nu,c,3,3\nu,d,5,4\nv,a,3.5,1\n")
    summary = convert_with_summary("amazon-csv", source, tmp_path, "r", min_rating=3)
    frame = read_inter(summary.path)
    assert frame["item_id:token"].tolist() == ["c", "d", "a"]
    assert frame["rating:float"].astype(float).min() >= 3
    assert summary.n_dropped_rating == 2


def test_k_core_needs_to_iterate(tmp_path):
    # With k=2 one pass only removes (u3, c). That leaves u3 with one interaction, removing it
    # leaves item e with one, removing that leaves u5 with one: four passes in all.
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"),
            ("u3", "e"), ("u3", "c"), ("u5", "e"), ("u5", "a")]
    text = "".join(f"{user},{item},5,{n}\n" for n, (user, item) in enumerate(rows))
    source = write(tmp_path / "r.csv", text)
    summary = convert_with_summary("amazon-csv", source, tmp_path, "r", k_core=2)

    frame = read_inter(summary.path)
    assert frame[["user_id:token", "item_id:token"]].values.tolist() == [
        ["u1", "a"], ["u1", "b"], ["u2", "a"], ["u2", "b"],
    ]
    assert (summary.n_users, summary.n_items, summary.n_dropped_k_core) == (2, 2, 4)


def test_k_core_result_is_a_core_and_off_by_default(tmp_path):
    rows = [(f"u{n % 7}", f"i{(n * 3) % 11}") for n in range(60)] + [("lonely", "i0")]
    text = "".join(f"{user},{item},4,{n}\n" for n, (user, item) in enumerate(rows))
    source = write(tmp_path / "r.csv", text)

    assert len(read_inter(convert("amazon-csv", source, tmp_path, "all"))) == len(rows)
    frame = read_inter(convert("amazon-csv", source, tmp_path, "core", k_core=5))
    assert frame["user_id:token"].value_counts().min() >= 5
    assert frame["item_id:token"].value_counts().min() >= 5
    assert "lonely" not in set(frame["user_id:token"])


# --- bad input --------------------------------------------------------------------------------

BAD_INPUTS = [
    ("seq", "1 2 3\n7\n", 2, "no items"),
    ("seq", "1 2 3\n2 4\n1 5\n", 3, "line 1"),
    ("seq", "1 2 3\n2 NA 4\n", 2, "missing value"),
    ("amazon-csv", "u,i,5,1\nu,j,5\n", 2, "expected 4"),
    ("amazon-csv", "u,i,5,1\nu,j,5,1,extra\n", 2, "found 5"),
    ("amazon-csv", "u,i,5,1\n\nu,j,five,2\n", 3, "rating 'five' is not a finite number"),
    ("amazon-csv", "u,i,5,1\nu,j,5,yesterday\n", 2, "timestamp 'yesterday'"),
    ("amazon-csv", "u,i,nan,1\n", 1, "rating 'nan'"),
    ("amazon-csv", "u,i,5,1\n,j,5,2\n", 2, "user id is an empty string"),
    ("amazon-csv", 'u,i,5,1\nu,"j\tk",5,2\n', 2, "contains"),
]


@pytest.mark.parametrize("fmt, text, line_no, what", BAD_INPUTS)
def test_bad_lines_name_file_and_line(tmp_path, fmt, text, line_no, what):
    source = write(tmp_path / "bad.txt", text)
    with pytest.raises(ConversionError) as info:
        convert(fmt, source, tmp_path / "out", "d")
    message = str(info.value)
    assert str(source) in message
    assert f"line {line_no}:" in message
    assert what in message
    assert not (tmp_path / "out").exists()


def test_invalid_utf8_names_the_line(tmp_path):
    source = write(tmp_path / "bad.txt", b"1 2 3\n2 4\n3 \xff\xfe 5\n", mode="wb")
    with pytest.raises(ConversionError, match=r"bad\.txt, line 3: not valid UTF-8"):
        convert("seq", source, tmp_path / "out", "d")


@pytest.mark.parametrize("fmt", ["seq", "amazon-csv"])
@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_empty_file(tmp_path, fmt, text):
    source = write(tmp_path / "empty.txt", text)
    with pytest.raises(ConversionError, match="empty") as info:
        convert(fmt, source, tmp_path / "out", "d")
    assert str(source) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_header_only_csv_is_empty(tmp_path):
    source = write(tmp_path / "h.csv", "user,item,rating,timestamp\n")
    with pytest.raises(ConversionError, match="empty"):
        convert("amazon-csv", source, tmp_path, "d")


@pytest.mark.parametrize(
    "fmt, opts, pattern",
    [
        ("movielens", {}, "unknown format 'movielens'"),
        ("seq", {"min_rating": 3}, "min_rating does not apply"),
        ("seq", {"k_core": -1}, "k_core must be a non-negative integer"),
        ("seq", {"kcore": 5}, "unknown option"),
    ],
)
def test_bad_options(tmp_path, fmt, opts, pattern):
    source = write(tmp_path / "s.txt", "1 2 3\n")
    with pytest.raises(ConversionError, match=pattern):
        convert(fmt, source, tmp_path / "out", "d", **opts)
    assert not (tmp_path / "out").exists()


def test_missing_input_and_bad_dataset_name(tmp_path):
    with pytest.raises(ConversionError, match="not found"):
        convert("seq", tmp_path / "nope.txt", tmp_path, "d")
    source = write(tmp_path / "s.txt", "1 2 3\n")
    with pytest.raises(ConversionError, match="dataset name"):
        convert("seq", source, tmp_path, "a/b")


def test_nothing_left_after_filtering(tmp_path):
    source = write(tmp_path / "r.csv", "u,a,1,1\nv,b,5,2\n")
    with pytest.raises(ConversionError, match="no interactions left"):
        convert("amazon-csv", source, tmp_path / "out", "d", min_rating=2, k_core=2)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path):
    source = write(tmp_path / "s.txt", "1 2 3\n")
    path = convert("seq", source, tmp_path, "d")
    write(source, "1 4\n")
    with pytest.raises(ConversionError, match="already exists.*overwrite") as info:
        convert("seq", source, tmp_path, "d")
    assert path in str(info.value)
    assert read_inter(path)["item_id:token"].tolist() == ["2", "3"]

    convert("seq", source, tmp_path, "d", overwrite=True)
    assert read_inter(path)["item_id:token"].tolist() == ["4"]
    assert folder_listing(tmp_path / "d") == ["d.inter"]


def test_late_error_leaves_nothing(tmp_path):
    lines = [f"u{n},i{n % 13},4,{n}" for n in range(2000)] + ["u,i,4"]
    source = write(tmp_path / "r.csv", "\n".join(lines) + "\n")
    output_dir = tmp_path / "new" / "data"
    with pytest.raises(ConversionError, match="line 2001"):
        convert("amazon-csv", source, output_dir, "d")
    assert folder_listing(tmp_path) == ["r.csv"]


def test_failed_write_keeps_old_output_and_leaves_no_temp_file(tmp_path, monkeypatch):
    source = write(tmp_path / "s.txt", "1 2 3\n")
    path = convert("seq", source, tmp_path, "d")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_module.os, "replace", disk_full)
    with pytest.raises(ConversionError, match="could not write"):
        convert("seq", write(source, "1 9\n"), tmp_path, "d", overwrite=True)
    assert folder_listing(tmp_path / "d") == ["d.inter"]
    assert read_inter(path)["item_id:token"].tolist() == ["2", "3"]

    with pytest.raises(ConversionError):
        convert("seq", source, tmp_path / "fresh", "d")
    assert not (tmp_path / "fresh").exists()


# --- command line -----------------------------------------------------------------------------


def run_cli(args, cwd):
    # No PYTHONPATH: the script must find the package from the checkout by itself.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, CLI] + args, cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )


def test_cli_success_prints_one_line(tmp_path):
    source = write(tmp_path / "r.csv", "u,a,5,1\nu,b,4,2\nv,a,1,3\n")
    result = run_cli(
        ["--format", "amazon-csv", "--input", str(source), "--output_dir", str(tmp_path / "out"),
         "--dataset", "beauty", "--min_rating", "3"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "1 users, 2 items, 2 interactions" in lines[0]
    assert (tmp_path / "out" / "beauty" / "beauty.inter").is_file()


def test_cli_error_exit_2_without_traceback(tmp_path):
    source = write(tmp_path / "Beauty.txt", "1 2 3\n2\n")
    result = run_cli(
        ["--format", "seq", "--input", str(source), "--output_dir", str(tmp_path / "out"),
         "--dataset", "beauty"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert f"{source}, line 2:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_unknown_format_exit_2(tmp_path):
    source = write(tmp_path / "s.txt", "1 2\n")
    result = run_cli(
        ["--format", "parquet", "--input", str(source), "--output_dir", str(tmp_path),
         "--dataset", "d"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "error: unknown format 'parquet'" in result.stderr
    assert "Traceback" not in result.stderr


# --- RecBole reads the result -----------------------------------------------------------------


def recbole_dataset(data_path, dataset, monkeypatch):
    from recbole.config import Config
    from recbole.data import create_dataset

    monkeypatch.chdir(data_path)  # anything RecBole writes lands in tmp_path
    config = Config(
        model="SASRec",
        dataset=dataset,
        config_dict={
            "data_path": str(data_path),
            "load_col": None,  # every column of the .inter file
            "train_neg_sample_args": None,  # SASRec's CE loss samples no negatives
            # Leave-one-out in time order, the setting of the sequential benchmarks.
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                          "group_by": "user", "mode": "full"},
            "gpu_id": "",
            "show_progress": False,
        },
    )
    return create_dataset(config)


def test_recbole_loads_converted_seq(tmp_path, monkeypatch):
    source = write(tmp_path / "Beauty.txt", "1 5 3 9 3\n2 3 7\n3 9 5 7 8\n")
    convert("seq", source, tmp_path, "beauty")
    dataset = recbole_dataset(tmp_path, "beauty", monkeypatch)

    assert dataset.user_num - 1 == 3  # RecBole adds a [PAD] id
    assert dataset.item_num - 1 == 5
    assert dataset.inter_num == 10

    # RecBole's stable sort on the position timestamps gives back each sequence: the test
    # example of a user is its last item, with the items before it as history.
    _, _, test = dataset.build()
    features = test.inter_feat
    histories = {}
    for row, user in enumerate(test.id2token("user_id", features["user_id"].numpy())):
        length = int(features["item_length"][row])
        history = test.id2token("item_id", features["item_id_list"][row, :length].numpy())
        target = test.id2token("item_id", features["item_id"][row : row + 1].numpy())
        histories[user] = (list(history), list(target))
    assert histories["1"] == (["5", "3", "9"], ["3"])
    assert histories["3"] == (["9", "5", "7"], ["8"])


def test_recbole_loads_converted_amazon_csv(tmp_path, monkeypatch):
    source = write(tmp_path / "r.csv", AMAZON_ROWS)
    convert("amazon-csv", source, tmp_path, "ratings")
    dataset = recbole_dataset(tmp_path, "ratings", monkeypatch)

    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (2, 4, 5)
    assert "rating" in dataset.inter_feat.columns
    assert sorted(dataset.inter_feat["rating"].tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
