"""benchmarks/leaderboard.py: stored runs are skipped, changed ones rerun, the page is rebuilt
from the stored JSON alone, and the paired bootstrap behaves on constructed cases."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "leaderboard.py")

TINY_PROTOCOL = """\
load_col: {inter: [user_id, item_id, timestamp]}
eval_args: {split: {'LS': 'valid_and_test'}, group_by: user, order: TO, mode: full}
metrics: ["Hit", "NDCG"]
topk: [5, 10, 20]
valid_metric: NDCG@10
hidden_size: 16
inner_size: 32
n_layers: 1
n_heads: 1
MAX_ITEM_LIST_LENGTH: 20
"""


def load_leaderboard():
    spec = importlib.util.spec_from_file_location("benchmarks_leaderboard", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lb = load_leaderboard()


@pytest.fixture
def board_args(tiny_data, tmp_path):
    data_path, name = tiny_data
    protocol = tmp_path / "tiny.yaml"
    protocol.write_text(TINY_PROTOCOL)
    results = tmp_path / "results"
    return [
        f"--dataset={name}", f"--data_path={data_path}", "--seeds", "7", "--models", "Pop", "SASRec",
        "--config_files", str(protocol), "--epochs=1", f"--results_dir={results}", f"--work_dir={tmp_path / 'work'}",
        "--bootstrap=200",
    ], results


def stored(results, label, seed=7):
    with open(results / "leaderboard" / "tiny" / f"{label}-seed{seed}.json", encoding="utf-8") as handle:
        return json.load(handle)


def forbid_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(lb.bench, "run_model", refuse)


@pytest.fixture(autouse=True)
def fingerprint(monkeypatch):
    """A stand-in for the behaviour fingerprint (``benchmarks/fingerprint.py`` has its own tests):
    the value a test puts in the returned dict."""
    value = {"value": "behaviour-1"}
    monkeypatch.setattr(lb.behaviour, "fingerprint", lambda model, dataset, settings, work_dir=None: value["value"])
    return value


def test_resumed_leaderboard_skips_stored_runs_and_reruns_changed_ones(board_args, monkeypatch, capsys, fingerprint):
    argv, results = board_args
    monkeypatch.setattr(lb, "code_hash", lambda model: "this-code")  # the tree may change while tests run
    assert lb.main(argv) == 0
    first = {label: stored(results, label) for label in ("Pop", "SASRec")}
    for record in first.values():
        assert record["status"] == "ok" and record["seed"] == 7
        # the stored ranks give back RecBole's own metrics of the same evaluation
        _, ranks = lb.worker.decode_rows(record["test_rows"])
        assert len(ranks) == record["dataset_statistics"]["users"]
        for metric in lb.METRICS:
            assert lb.user_metric(ranks, metric).mean() == pytest.approx(record["test_result"][metric], abs=1e-4)

    with monkeypatch.context() as patch:  # same settings, same code: nothing trains
        forbid_training(patch)
        assert lb.main(argv) == 0
    assert capsys.readouterr().out.count(": stored (") == 2

    # a changed setting reruns that model only
    argv = [*argv, "--model_args", "SASRec:learning_rate=0.01"]
    assert lb.main(argv) == 0
    out = capsys.readouterr().out
    assert "Pop seed 7: stored" in out and "SASRec seed 7: running" in out
    assert stored(results, "SASRec")["overrides"]["learning_rate"] == "0.01"
    assert stored(results, "Pop")["finished"] == first["Pop"]["finished"]

    # a run stored before fingerprints existed gets the current code's, without training
    record = stored(results, "Pop")
    assert record["fingerprint"] == "behaviour-1"
    del record["fingerprint"]
    (results / "leaderboard" / "tiny" / "Pop-seed7.json").write_text(json.dumps(record))
    with monkeypatch.context() as patch:
        forbid_training(patch)
        assert lb.main([*argv, "--fingerprint_stored"]) == 0
    assert stored(results, "Pop")["fingerprint"] == "behaviour-1"

    # other code that computes the same thing (same fingerprint) keeps the stored runs
    monkeypatch.setattr(lb, "code_hash", lambda model: "other-code")
    with monkeypatch.context() as patch:
        forbid_training(patch)
        assert lb.main(argv) == 0
    assert capsys.readouterr().out.count("other code with the same fingerprint") == 2
    assert stored(results, "Pop")["code_hash"] == "this-code"  # the code that made it

    # a fingerprint of an earlier definition counts as its pair in the upgrade table
    upgrades = results / "upgrades.json"
    upgrades.write_text(json.dumps({"pairs": {"definition-1": "behaviour-1"}}))
    monkeypatch.setattr(lb.behaviour, "UPGRADES_FILE", str(upgrades))
    record = stored(results, "Pop")
    record["fingerprint"] = "definition-1"
    (results / "leaderboard" / "tiny" / "Pop-seed7.json").write_text(json.dumps(record))
    with monkeypatch.context() as patch:
        forbid_training(patch)
        assert lb.main(argv) == 0
    assert capsys.readouterr().out.count("other code with the same fingerprint") == 2
    upgrades.write_text(json.dumps({"pairs": {}}))  # without the pair it is another behaviour
    with monkeypatch.context() as patch:
        forbid_training(patch)
        with pytest.raises(AssertionError, match="trained again"):
            lb.main(argv)
    upgrades.write_text(json.dumps({"pairs": {"definition-1": "behaviour-1"}}))

    # other code that computes something else reruns, unless told to keep the stored runs
    monkeypatch.setattr(lb, "code_hash", lambda model: "third-code")
    fingerprint["value"] = "behaviour-2"
    with monkeypatch.context() as patch:
        forbid_training(patch)
        assert lb.main([*argv, "--reuse_other_code"]) == 0
        with pytest.raises(AssertionError, match="trained again"):
            lb.main(argv)


def test_page_is_rebuilt_from_stored_json_alone(board_args, monkeypatch, tmp_path):
    argv, results = board_args
    assert lb.main(argv) == 0
    page = results / "tiny.md"
    page.unlink()
    forbid_training(monkeypatch)
    assert lb.main(["--dataset=tiny", f"--results_dir={results}", "--render"]) == 0
    text = page.read_text()
    sasrec = stored(results, "SASRec")
    row = next(line for line in text.splitlines() if line.startswith("| `SASRec` |"))
    assert f"{sasrec['test_result']['ndcg@10']:.4f}" in row and "(reference)" in row
    pop_row = next(line for line in text.splitlines() if line.startswith("| `Pop` |"))
    assert "[" in pop_row  # Pop's interval against SASRec
    assert "not run (seeds 7)" in text  # the other leaderboard models
    assert (results / "tiny-leaderboard-ndcg10.png").exists()
    assert str(tmp_path) not in text  # no absolute path: commands are relative to the repository


def test_bootstrap_of_a_model_against_itself_is_a_point_at_zero():
    rng = np.random.default_rng(1)
    rows = ([f"u{i}" for i in range(300)], rng.integers(1, 50, size=300))
    diffs = [lb.paired_differences(rows, rows) for _ in range(3)]
    assert lb.paired_bootstrap(diffs, resamples=200) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("sign", [1, -1])
def test_bootstrap_interval_has_the_sign_of_a_constructed_difference(sign):
    rng = np.random.default_rng(2)
    keys = [f"u{i}" for i in range(400)]
    reference = rng.integers(5, 60, size=400)
    better = np.where(rng.random(400) < 0.4, 1, reference)  # 40% of users get the target first
    model, ref = (better, reference) if sign > 0 else (reference, better)
    diffs = [lb.paired_differences((keys, model), (keys, ref)) for _ in range(2)]
    mean, low, high = lb.paired_bootstrap(diffs, resamples=300)
    assert low <= mean <= high
    assert (low > 0) if sign > 0 else (high < 0)


def test_paired_differences_pair_users_by_key_and_domain():
    # a cross-domain model ranks both domains; the single-domain reference only one, in another order
    model = (["a\tcloth", "a\tsport", "b\tcloth"], np.array([1, 3, 40]))
    reference = (["b\tcloth", "a\tcloth"], np.array([1, 40]))
    diff = lb.paired_differences(model, reference, "hit@10", domain="cloth")
    assert sorted(diff.tolist()) == [-1.0, 1.0]  # a: 1 vs 0, b: 0 vs 1
    assert lb.paired_differences(model, reference, "hit@10", domain="sport").size == 0


def test_failed_or_changed_runs_are_not_current():
    record = {"status": "ok", "settings_key": "k", "code_hash": "c"}
    assert lb.is_current(record, "k", "c", False)
    assert not lb.is_current({**record, "status": "failed"}, "k", "c", False)
    assert not lb.is_current(record, "other", "c", False)
    assert not lb.is_current(record, "k", "other", False) and lb.is_current(record, "k", "other", True)


def test_unknown_label_and_bad_seeds_are_refused(capsys):
    assert lb.main(["--dataset=amazon-beauty", "--models", "SASRec", "NoSuch", "--render"]) == 2
    assert "NoSuch not on the amazon-beauty leaderboard" in capsys.readouterr().err
    assert lb.main(["--dataset=amazon-beauty", "--seeds", "1", "1"]) == 2
    assert "a seed is given twice" in capsys.readouterr().err


def test_code_hash_follows_the_models_own_file_only():
    files = lb.code_files("DiffRec")
    assert os.path.join(lb.PLUGIN_MODEL_DIR, "diffrec.py") in files
    assert os.path.join(lb.PLUGIN_MODEL_DIR, "dreamrec.py") not in files
    assert not any(f.endswith("rec.py") and os.path.dirname(f) == lb.PLUGIN_MODEL_DIR for f in lb.code_files("SASRec"))
    assert os.path.join("recbole_diffusion", "trainer.py") in lb.code_files("SASRec")
    adapters = os.path.join("recbole_diffusion", "model", "sequence_adapters.py")
    assert adapters in lb.code_files("SASRec") and adapters not in lb.code_files("DiffRec")
    assert os.path.join("properties", "model", "DiffRec.yaml") in files
    assert os.path.join("properties", "model", "DreamRec.yaml") not in files


def test_checkpoint_reference_takes_the_same_seeds_stored_run(tmp_path, monkeypatch):
    """A ``checkpoint:<label>`` setting resolves to that label's kept checkpoint of the same seed,
    identifies the source run in the key material, and refuses clearly when the source is missing."""
    monkeypatch.setattr(lb, "REPO", str(tmp_path))
    entry = {"label": "DreamRec@x", "overrides": {"item_embedding_checkpoint": "checkpoint:SASRec", "epochs": "2"}}
    with pytest.raises(lb.UsageError, match="needs SASRec's run of seed 7 stored with its checkpoint"):
        lb.checkpoint_references(entry, 7, str(tmp_path / "results"), "tiny")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "SASRec.pth").write_bytes(b"weights")
    source = {"status": "ok", "checkpoint": os.path.join("ckpt", "SASRec.pth"), "settings_key": "k", "code_hash": "c", "finished": "t"}
    folder = tmp_path / "results" / "leaderboard" / "tiny"
    folder.mkdir(parents=True)
    (folder / "SASRec-seed7.json").write_text(json.dumps(source))
    paths, sources = lb.checkpoint_references(entry, 7, str(tmp_path / "results"), "tiny")
    assert paths == {"item_embedding_checkpoint": str(tmp_path / "ckpt" / "SASRec.pth")}
    assert sources == {"SASRec": ["k", "c", "t"]}
    with pytest.raises(lb.UsageError, match="seed 8"):
        lb.checkpoint_references(entry, 8, str(tmp_path / "results"), "tiny")
    # a new checkout has the source's record but not its checkpoint: enough to identify a stored
    # dependent run (need_files=False), not to train one
    (tmp_path / "ckpt" / "SASRec.pth").unlink()
    assert lb.checkpoint_references(entry, 7, str(tmp_path / "results"), "tiny", need_files=False)[1] == sources
    with pytest.raises(lb.UsageError, match="needs SASRec's run of seed 7 stored with its checkpoint"):
        lb.checkpoint_references(entry, 7, str(tmp_path / "results"), "tiny")


def test_a_missing_source_checkpoint_is_rerun_only_when_a_run_still_needs_it(tmp_path, monkeypatch):
    monkeypatch.setattr(lb, "REPO", str(tmp_path))
    results = str(tmp_path / "results")
    folder = tmp_path / "results" / "leaderboard" / "tiny"
    folder.mkdir(parents=True)
    sasrec = {"label": "SASRec", "overrides": {}}
    dependent = {"label": "DreamRec@x", "overrides": {"item_embedding_checkpoint": "checkpoint:SASRec"}}
    (folder / "SASRec-seed7.json").write_text(json.dumps({"status": "ok", "checkpoint": "gone.pth"}))
    assert lb.checkpoint_needed(sasrec, 7, [sasrec, dependent], results, "tiny")
    assert not lb.checkpoint_needed(sasrec, 7, [sasrec], results, "tiny")  # nothing starts from it
    (tmp_path / "gone.pth").write_bytes(b"w")
    assert not lb.checkpoint_needed(sasrec, 7, [sasrec, dependent], results, "tiny")  # on disk
    (tmp_path / "gone.pth").unlink()
    (folder / f"{lb.bench.slug('DreamRec@x')}-seed7.json").write_text(json.dumps({"status": "ok"}))
    assert not lb.checkpoint_needed(sasrec, 7, [sasrec, dependent], results, "tiny")  # dependent stored


def test_fingerprints_of_one_model_on_two_datasets_are_kept_apart(monkeypatch, tmp_path):
    # the cross-domain leaderboard runs SASRec once per domain: each label needs its own fingerprint
    monkeypatch.setattr(lb.behaviour, "fingerprint", lambda model, dataset, settings, work_dir=None: f"{model}@{dataset}")
    fingerprints = lb.Fingerprints(str(tmp_path))
    cloth = {"label": "SASRec@cloth", "model": "SASRec", "dataset": "cloth"}
    sport = {"label": "SASRec@sport", "model": "SASRec", "dataset": "sport"}
    assert fingerprints.of(cloth, {"seed": 1}, "code") == "SASRec@cloth"
    assert fingerprints.of(sport, {"seed": 1}, "code") == "SASRec@sport"
    # and a resumed leaderboard reads both back from its work folder
    assert lb.Fingerprints(str(tmp_path)).of(sport, {"seed": 2}, "code") == "SASRec@sport"


# a row of the README's model table that states a leaderboard result:
# | model | paper | `label` on dataset[ (domain)] | NDCG@10 mean ± std (n seeds) | Δ [95% CI] | notes |
README_ROW = re.compile(
    r"^\|[^|]*\|[^|]*\| `(?P<label>[^`]+)` on (?P<dataset>[\w-]+)(?: \((?P<domain>[\w-]+)\))? \| (?P<value>[^|]+?) \| (?P<delta>[^|]+?) \|"
)


def readme_rows(text):
    return [match.groupdict() for match in map(README_ROW.match, text.splitlines()) if match]


def constructed_board(results, ranks_of, seeds=(1,), extra=None):
    """A :class:`Board` of dataset ``tiny`` from stored runs made up of per-user ranks (``ranks_of``:
    label -> ranks, the same users), each label's model its label's first word."""
    folder = results / "leaderboard" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    for label, ranks in ranks_of.items():
        for seed in seeds:
            rows = {"user": [f"u{i}" for i in range(len(ranks))], "rank": ranks}
            record = {"label": label, "model": label.split("@")[0], "seed": seed, "status": "ok",
                      "test_result": {"ndcg@10": float(lb.user_metric(ranks, "ndcg@10").mean())},
                      "test_rows": lb.worker.encode_rows(rows), **(extra or {}).get(label, {})}
            (folder / f"{lb.bench.slug(label)}-seed{seed}.json").write_text(json.dumps(record))
    return lb.load_board("tiny", str(results), 200)


def test_findings_link_their_runs_and_name_models_below_the_floor_or_cut_by_the_budget(tmp_path):
    rng = np.random.default_rng(4)
    reference = rng.integers(1, 40, 300)
    ranks = {
        "SASRec": reference,
        "Pop": rng.integers(5, 80, 300),
        "DreamRec": np.full(300, 500),  # ranks nothing: below the floor
        "AsarRec": np.where(rng.random(300) < 0.5, 1, reference),  # better than the reference
    }
    budget = {"overrides": {"epochs": "50", "stopping_step": "5"}}
    extra = {
        "AsarRec": {**budget, "epochs_run": 50, "best_epoch": 47},  # still improving when the budget ended
        "DreamRec": {**budget, "epochs_run": 7, "best_epoch": 1},  # early stopping ended it
    }
    board = constructed_board(tmp_path, ranks, seeds=(1, 2), extra=extra)
    lines = {line.split("`")[1]: line for line in lb.findings(board)}
    assert "beats `SASRec`" in lines["AsarRec"] and "floor" not in lines["AsarRec"]
    assert "2 of 2 run(s) used the whole epoch budget" in lines["AsarRec"]
    assert "trails `SASRec`" in lines["DreamRec"] and "does not clear the most-popular floor `Pop`" in lines["DreamRec"]
    assert "budget" not in lines["DreamRec"]
    assert "[1](leaderboard/tiny/AsarRec-seed1.json), [2](leaderboard/tiny/AsarRec-seed2.json)" in lines["AsarRec"]
    assert "(../../docs/models/AsarRec.md)" in lines["AsarRec"]  # the plugin model's notes
    # a run that early stopping ended on the budget's last epoch was not cut short
    assert lb.budget_cut([{**budget, "epochs_run": 50, "best_epoch": 44}]) == 0
    assert lb.budget_cut([{**budget, "epochs_run": 50, "best_epoch": 45}]) == 1


def test_readme_states_each_models_result_as_the_stored_leaderboard_gives_it():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        rows = readme_rows(handle.read())
    stated = {row["label"].split("@")[0] for row in rows}
    assert {"DiffRec", "DreamRec", "ADARec", "AsarRec", "i2VAE"} <= stated
    boards = {}
    for row in rows:
        dataset = row["dataset"]
        if dataset not in boards:
            boards[dataset] = lb.load_board(dataset, os.path.join(REPO, "benchmarks", "results"), 1000)
        expected = lb.headline(boards[dataset], row["label"], row["domain"])
        assert (row["value"], row["delta"]) == expected, f"README row for {row['label']} on {dataset}"


def test_the_readme_check_reads_a_row_and_catches_a_changed_number(tmp_path):
    line = "| `AsarRec` | paper | `AsarRec` on amazon-beauty | 0.0430 ± 0.0004 (2 seeds) | +0.0024 (+6%) [+0.0014, +0.0034] | notes |"
    (row,) = readme_rows(line)
    assert row == {"label": "AsarRec", "dataset": "amazon-beauty", "domain": None, "value": "0.0430 ± 0.0004 (2 seeds)",
                   "delta": "+0.0024 (+6%) [+0.0014, +0.0034]"}
    (row,) = readme_rows("| | | `i2VAE` on cloth-sport (cloth) | 0.01 (1 seed) | – | x |")
    assert row["domain"] == "cloth"
    # a stored board whose number differs from the row's
    rng = np.random.default_rng(3)
    board = constructed_board(tmp_path, {"SASRec": rng.integers(1, 30, 50), "AsarRec": rng.integers(1, 30, 50)})
    value, delta = lb.headline(board, "AsarRec")
    assert value.endswith("(1 seed)") and delta.count("[") == 1
    assert lb.headline(board, "SASRec")[1] == "(reference)"
    assert (row["value"], row["delta"]) != (value, delta)


def test_a_group_with_too_few_hits_is_flagged_and_a_larger_one_is_not(tmp_path):
    ranks = np.arange(1, 101)
    extra = {
        "SASRec": {"test_result": {"ndcg@10": 0.1, "users (g)": 200, "hit@10 (g)": 0.005, "users (h)": 200, "hit@10 (h)": 0.2}},
        "i2VAE": {"test_result": {"ndcg@10": 0.1, "users (g)": 200, "hit@10 (g)": 0.01, "users (h)": 200, "hit@10 (h)": 0.05}},
    }
    board = constructed_board(tmp_path, {"SASRec": ranks, "i2VAE": ranks}, seeds=(1, 2), extra=extra)
    notes = lb.small_group_notes(board, [("small", "g"), ("large", "h")])
    assert len(notes) == 1 and notes[0].startswith("- small: too few hits")
    assert "`SASRec` 1.0, `i2VAE` 2.0" in notes[0]


def test_the_page_command_gives_the_settings_and_folder_the_runs_were_given():
    """A page of runs given settings of their own (``--model_args``, ``--set``) in another results
    folder shows the command that makes those runs again, not the default leaderboard's."""
    from benchmarks import leaderboard

    entries, common = leaderboard.leaderboard_entries("amazon-beauty", ["SASRec", "DiffRec"])

    def runs(extra):
        return {(e["label"], 2020): {"overrides": {**leaderboard.COMMON, **common, **{k: v for k, v in e["settings"].items() if k != "dataset"},
                                                   **extra, "seed": "2020"}, "data_path": "DATA"} for e in entries}

    plain = leaderboard.page_command("amazon-beauty", runs({}), [2020])
    assert plain == "python benchmarks/leaderboard.py --dataset=amazon-beauty --data_path=DATA --seeds 2020"
    given = leaderboard.page_command("amazon-beauty", runs({"hidden_size": "256"}), [2020],
                                     os.path.join(leaderboard.REPO, "benchmarks", "results", "other"))
    assert given == ("python benchmarks/leaderboard.py --dataset=amazon-beauty --data_path=DATA --models SASRec DiffRec "
                     "--model_args SASRec:hidden_size=256 DiffRec:hidden_size=256 --results_dir benchmarks/results/other --seeds 2020")
