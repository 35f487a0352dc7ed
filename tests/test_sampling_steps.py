"""benchmarks/sampling_steps.py: one checkpoint evaluated at several sampling steps S."""

import json
import os
import re
import sys
import types

import pytest
import torch

from conftest import REPO, TINY_USERS, run_benchmark_script, train_saved

SCRIPT = os.path.join(REPO, "benchmarks", "sampling_steps.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import sampling_steps  # noqa: E402

T = 20
# 8 decimals, so that the full chain's NDCG can be compared with the training run's to the digit
TRAINING = {
    "n_diffusion_steps": T, "hidden_size": 16, "inner_size": 16, "learning_rate": 0.01,
    "topk": [10, 20], "metric_decimal_place": 8,
}


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A tiny DreamRec trained one epoch with the full chain (n_sample_steps null), and its test result."""
    return train_saved("DreamRec", tiny_data, tmp_path_factory.mktemp("trained"), **TRAINING)


def run_script(tmp_path, *args):
    return run_benchmark_script(
        "sampling_steps.py", tmp_path, *args,
        f"--results_dir={tmp_path / 'results'}", f"--work_dir={tmp_path / 'work'}", "--threads=1",
    )


def section_of(text, name):
    match = re.search(rf"<!-- section: {re.escape(name)} -->\n(.*?)<!-- end section: {re.escape(name)} -->", text, re.S)
    assert match, text
    return match.group(1)


def table_rows(section):
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return header, [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_one_row_per_step_and_the_full_chain_is_the_training_runs_test_result(trained, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    other = "<!-- section: other -->\nkept as it was\n<!-- end section: other -->\n"
    (results / "tiny.md").write_text("# Benchmarks: tiny\n\n" + other)

    done = run_script(tmp_path, f"--checkpoint={trained['saved_model_file']}", "--steps", str(T), "10", "2", "--section=steps", "--repeats", "2")
    assert done.returncode == 0, done.stderr

    text = (results / "tiny.md").read_text()
    assert other in text
    header, rows = table_rows(section_of(text, "steps"))
    assert header == ["S", "test HR@10", "test NDCG@10", "test NDCG@20", "eval seconds", f"× S={T} seconds", f"NDCG@10 vs S={T}"]
    assert [row[0] for row in rows] == [str(T), "10", "2"]
    assert all(float(row[4]) > 0 for row in rows)
    assert rows[0][5:] == ["1.00", "reference"]
    assert all(re.fullmatch(r"[+\u2212]\d+\.\d%", row[6]) for row in rows[1:])

    record = json.loads((results / "tiny-steps.json").read_text())
    assert record["checkpoint"]["model"] == "DreamRec" and record["checkpoint"]["epoch"] == 1
    raw = record["rows"]
    test_result = dict(trained["test_result"])
    # S = T through the strided sampler is the full chain the training run tested, same seeded noise
    for key in ("hit@10", "ndcg@10", "ndcg@20"):
        assert raw[0]["metrics"][key] == pytest.approx(test_result[key], abs=1e-12), key
    assert float(rows[0][2]) == pytest.approx(test_result["ndcg@10"], abs=5e-5)
    # S really changed between rows: two steps of the chain do not give T steps' oracles
    assert raw[2]["metrics"] != raw[0]["metrics"]
    for row in raw:
        assert len(row["seconds_each"]) == 2 and all(s > 0 for s in row["seconds_each"])
        assert row["metrics_identical_across_repeats"]
        expected = (row["metrics"]["ndcg@10"] - raw[0]["metrics"]["ndcg@10"]) / raw[0]["metrics"]["ndcg@10"]
        assert row["relative_ndcg@10"] == pytest.approx(expected)
        assert row["seconds_ratio"] == pytest.approx(row["seconds"] / raw[0]["seconds"])


@pytest.mark.parametrize("steps", [[T, T + 1], [0], [10, 10]])
def test_a_bad_step_count_is_refused_before_any_work(trained, tmp_path, capsys, steps):
    code = sampling_steps.main([
        f"--checkpoint={trained['saved_model_file']}", "--steps", *map(str, steps), "--section=steps",
        f"--results_dir={tmp_path / 'results'}", f"--work_dir={tmp_path / 'work'}",
    ])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --steps")
    assert os.listdir(tmp_path) == []


def test_a_model_without_sampling_steps_is_refused(trained, tmp_path, capsys):
    from recbole_diffusion.compat import load_checkpoint

    checkpoint = load_checkpoint(trained["saved_model_file"])
    config = json.loads(checkpoint["config"])
    config["model"] = "SASRec"
    checkpoint["config"] = json.dumps(config)
    torch.save(checkpoint, tmp_path / "sasrec.pth")
    code = sampling_steps.main([
        f"--checkpoint={tmp_path / 'sasrec.pth'}", "--steps", str(T), "--section=steps",
        f"--results_dir={tmp_path / 'results'}", f"--work_dir={tmp_path / 'work'}",
    ])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --checkpoint: model SASRec has no n_sample_steps")
    assert sorted(os.listdir(tmp_path)) == ["sasrec.pth"]


# ----------------------------------------------------------------------------- --variants, --users
def test_one_row_per_variant_with_the_config_the_model_saw(trained, tmp_path):
    first, second = f"n_sample_steps={T}", "n_sample_steps=2,sample_eta=0.0"
    done = run_script(tmp_path, f"--checkpoint={trained['saved_model_file']}", "--variants", first, second, "--section=variants")
    assert done.returncode == 0, done.stderr

    header, rows = table_rows(section_of((tmp_path / "results" / "tiny.md").read_text(), "variants"))
    assert header == ["variant", "test HR@10", "test NDCG@10", "test NDCG@20", "eval seconds",
                      f"× `{first}` seconds", f"NDCG@10 vs `{first}`"]
    assert [row[0] for row in rows] == [f"`{first}`", f"`{second}`"]
    assert rows[0][5:] == ["1.00", "reference"]

    record = json.loads((tmp_path / "results" / "tiny-variants.json").read_text())
    assert record["mode"] == "variants" and record["users"] is None
    raw = record["rows"]
    assert [row["label"] for row in raw] == [first, second]
    # the strings as RecBole converts them, in the configuration each model was built with
    assert raw[0]["config"] == {"n_sample_steps": T}
    assert raw[1]["config"] == {"n_sample_steps": 2, "sample_eta": 0.0}
    # the first variant is the full chain the training run tested; the second really sampled otherwise
    for key in ("hit@10", "ndcg@10", "ndcg@20"):
        assert raw[0]["metrics"][key] == pytest.approx(trained["test_result"][key], abs=1e-12), key
    assert raw[1]["metrics"] != raw[0]["metrics"]
    assert record["warmup"]["label"] == second
    assert all(row["users_evaluated"] == TINY_USERS for row in raw)


@pytest.mark.parametrize("variants, message", [
    (["n_sample_steps=0"], "--variants n_sample_steps=0: n_sample_steps: must be"),
    (["n_sample_steps=2,sample_eta=high"], "--variants n_sample_steps=2,sample_eta=high: sample_eta"),
    (["no_such_option=1"], "--variants no_such_option=1: no_such_option is not an option of DreamRec"),
    (["n_sample_steps"], "--variants n_sample_steps: expected KEY=VALUE"),
    (["topk=5"], "--variants topk=5: topk is a data or evaluation option"),
    (["model=SASRec"], "--variants model=SASRec: model is not a model option"),
    (["n_sample_steps=2", "n_sample_steps=2"], "--variants: 'n_sample_steps=2' sets what an earlier variant sets"),
])
def test_a_bad_variant_is_refused_before_any_work(trained, tmp_path, capsys, variants, message):
    code = sampling_steps.main([
        f"--checkpoint={trained['saved_model_file']}", "--variants", *variants, "--section=variants",
        f"--results_dir={tmp_path / 'results'}", f"--work_dir={tmp_path / 'work'}",
    ])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: " + message)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("rows, message", [
    ([], "one of the arguments --steps --variants is required"),
    (["--steps", str(T), "--variants", "n_sample_steps=2"], "not allowed with argument"),
])
def test_exactly_one_of_steps_and_variants(trained, tmp_path, capsys, rows, message):
    with pytest.raises(SystemExit) as exit_:
        sampling_steps.main([f"--checkpoint={trained['saved_model_file']}", *rows, "--section=x", f"--results_dir={tmp_path}"])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_users_evaluates_the_same_k_users_in_every_row(trained, tmp_path):
    done = run_script(tmp_path, f"--checkpoint={trained['saved_model_file']}", "--steps", str(T), "2", "--users", "7", "--section=few")
    assert done.returncode == 0, done.stderr
    assert "ms per user (7 users)" in done.stdout

    section = section_of((tmp_path / "results" / "tiny.md").read_text(), "few")
    assert f"metrics and seconds on 7 of the {TINY_USERS} users of the test split" in section
    header, rows = table_rows(section)
    assert header[-1] == "ms per user" and len(rows) == 2

    record = json.loads((tmp_path / "results" / "tiny-few.json").read_text())
    users = record["users"]
    assert users["evaluated"] == 7 and users["of"] == TINY_USERS and len(set(users["user_tokens"])) == 7
    for row, cells in zip(record["rows"], rows):
        assert row["users_evaluated"] == 7  # what the evaluation collected, not what was asked
        assert row["seconds_per_user"] == pytest.approx(row["seconds"] / 7)
        assert float(cells[-1]) == pytest.approx(1000 * row["seconds_per_user"], abs=0.01)
    # a subset, so not the full split's result
    assert record["rows"][0]["metrics"] != {k: float(v) for k, v in trained["test_result"].items()}


def test_the_user_count_is_the_whole_evaluation_not_its_last_group():
    """Option sparse_users (and a cross-domain dataset) call the evaluator again on each group's
    rows after the whole split's, inside one ``trainer.evaluate``: the count is the evaluation's."""
    from recbole.evaluator.collector import DataStruct

    def struct(rows):
        data = DataStruct()
        data.set("rec.topk", torch.zeros(rows, 11))
        return data

    class Trainer:
        def __init__(self):
            self.evaluator = types.SimpleNamespace(evaluate=lambda data: {"rows": len(data.get("rec.topk"))})

        def evaluate(self, groups):
            result = self.evaluator.evaluate(struct(9))  # RecBole's: every collected row
            for rows in groups:  # then each group's subset, as evaluation.group_results does
                self.evaluator.evaluate(struct(rows))
            return result

    trainer = Trainer()
    sampling_steps.count_ranked_users(trainer)
    assert trainer.evaluate([4, 2]) == {"rows": 9}
    trainer.evaluate([])
    assert trainer.ranked_users == [9, 9]


def test_more_users_than_the_split_holds_is_an_error(trained, tmp_path, capsys):
    code = sampling_steps.main([
        f"--checkpoint={trained['saved_model_file']}", "--steps", str(T), "--users", str(TINY_USERS + 1), "--section=few",
        f"--results_dir={tmp_path / 'results'}", f"--work_dir={tmp_path / 'work'}", "--threads=1",
    ])
    assert code == 2
    assert f"error: --users {TINY_USERS + 1}: the split has only {TINY_USERS} users" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------- embedding_norms.py (same checkpoint)
import embedding_norms  # noqa: E402


def test_spearman_of_embedding_norms():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert embedding_norms.spearman(x, x * 10) == pytest.approx(1.0)
    assert embedding_norms.spearman(x, -x) == pytest.approx(-1.0)
    # ties share their mean rank: [0, 0, 1, 1] against [1, 2, 3, 4] is 2 * sqrt(5) / 5
    assert embedding_norms.spearman(torch.tensor([0, 0, 1, 1]), x) == pytest.approx(0.894427, abs=1e-6)


def test_embedding_norms_reads_the_checkpoint_and_its_split(trained, tmp_path):
    from recbole_diffusion.compat import load_checkpoint

    done = run_benchmark_script("embedding_norms.py", tmp_path, f"--checkpoint={trained['saved_model_file']}")
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "training" not in line]
    weight = load_checkpoint(trained["saved_model_file"])["state_dict"]["item_embedding.weight"]
    assert sum(int(row[1]) for row in rows) == weight.shape[0] - 1  # every real item in one bucket
    for column in (4, 5):  # every valid / test target is in some bucket
        assert sum(float(row[column]) for row in rows) == pytest.approx(1.0, abs=0.01)
    assert "Spearman correlation" in done.stdout

    missing = run_benchmark_script("embedding_norms.py", tmp_path, f"--checkpoint={tmp_path / 'none.pth'}")
    assert missing.returncode == 2 and "error: --checkpoint" in missing.stderr
