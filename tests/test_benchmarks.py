"""benchmarks/run.py: argument rules, the sectioned results file, and two real runs end to end."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "run.py")


def load_runner():
    spec = importlib.util.spec_from_file_location("benchmarks_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = load_runner()
common = sys.modules["benchmarks.common"]


# ----------------------------------------------------------------------------- arguments
def plan_for(*argv):
    return runner.resolve(runner.build_parser().parse_args(["--dataset=x", *argv]))


def test_model_args_bare_name_applies_to_every_entry_and_label_wins():
    plan = plan_for(
        "--models", "SASRec", "SASRec@seq", "GRU4Rec", "--epochs=3", "--set", "learning_rate=0.01",
        "--model_args", "SASRec:epochs=1,topk=[5,10]", "SASRec@seq:train_mode=sequence,epochs=2",
    )
    overrides = {entry["label"]: entry["overrides"] for entry in plan["entries"]}
    assert overrides["SASRec"] == {"learning_rate": "0.01", "epochs": "1", "topk": "[5,10]"}
    assert overrides["SASRec@seq"] == {"learning_rate": "0.01", "epochs": "2", "topk": "[5,10]", "train_mode": "sequence"}
    assert overrides["GRU4Rec"] == {"learning_rate": "0.01", "epochs": "3"}
    assert plan["reference"] == "SASRec"
    assert plan["section"] == "SASRec-SASRec@seq-GRU4Rec"
    assert [e["model"] for e in plan["entries"]] == ["SASRec", "SASRec", "GRU4Rec"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "SASRec", "SASRec"], "listed twice"),
        (["--models", "SASRec", "--model_args", "GRU4Rec:epochs=1"], "not a model in --models"),
        (["--models", "SASRec", "--model_args", "SASRec@x:epochs=1"], "not one of the labels"),
        (["--models", "SASRec", "--model_args", "SASRec:epochs"], "KEY=VALUE"),
        (["--models", "SASRec", "--reference", "GRU4Rec"], "--reference"),
        (["--models", "SASRec", "--section", "a b"], "--section: 'a b' is not a section name"),
        (["--models", "SAS Rec"], "--models"),
        (["--models", "SASRec", "--epochs=2", "--set", "epochs=3"], "disagree"),
    ],
)
def test_bad_arguments_are_refused(argv, message):
    with pytest.raises(runner.UsageError, match=re.escape(message)):
        plan_for(*argv)


def test_a_model_may_run_on_another_dataset_and_the_section_says_so():
    plan = plan_for("--models", "SASRec", "SASRec@cloth", "--model_args", "SASRec@cloth:dataset=cloth-sport-cloth,epochs=2")
    entries = {entry["label"]: entry for entry in plan["entries"]}
    assert entries["SASRec"]["dataset"] == "x"
    assert entries["SASRec@cloth"]["dataset"] == "cloth-sport-cloth"
    assert "dataset" not in entries["SASRec@cloth"]["config_dict"]  # the worker gets it as the job's dataset
    assert entries["SASRec@cloth"]["overrides"]["dataset"] == "cloth-sport-cloth"  # shown with the settings
    with pytest.raises(runner.UsageError, match="data_path cannot differ"):
        plan_for("--models", "SASRec", "--model_args", "SASRec:data_path=/elsewhere")
    with pytest.raises(runner.UsageError, match=re.escape("--model_args SASRec: dataset: '../x' is not a dataset name")):
        plan_for("--models", "SASRec", "--model_args", "SASRec:dataset=../x")
    # a committed run's state, rendered with one record moved to another dataset
    with open(os.path.join(REPO, "benchmarks", "results", "runs", "amazon-beauty-adarec-20-epochs.json"), encoding="utf-8") as handle:
        state = json.load(handle)
    state["labels"] = [record["label"] for record in state["records"]]  # not in the JSON
    assert "- Datasets:" not in common.render_section(state)
    state["records"][1]["dataset"] = "cloth-sport-cloth"
    label = state["records"][1]["label"]
    assert f"- Datasets: every model on `amazon-beauty` except {label} on `cloth-sport-cloth`" in common.render_section(state)


# ----------------------------------------------------------------------------- results file
def test_replace_section_keeps_other_sections_and_refuses_broken_markers():
    text = common.FILE_HEADER.format(dataset="d")
    text = common.replace_section(text, "a", "table A")
    text = common.replace_section(text, "b", "table B")
    text = common.replace_section(text, "a", "table A2")
    assert text.count("<!-- section: a -->") == 1 and "table A2" in text and "table A\n" not in text
    assert "table B" in text and text.index("table A2") < text.index("table B")  # replaced in place
    with pytest.raises(ValueError, match="unbalanced"):
        common.replace_section(text.replace("<!-- end section: b -->", ""), "b", "x")


# ----------------------------------------------------------------------------- end to end
TINY_SETTINGS = [
    "MAX_ITEM_LIST_LENGTH=20", "n_layers=1", "train_batch_size=256", "eval_batch_size=256",
    "load_col={'inter':['user_id','item_id','timestamp']}",
]


def run_script(tiny_data, tmp_path, *argv):
    data_path, name = tiny_data
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, SCRIPT, f"--dataset={name}", f"--data_path={data_path}", "--epochs=1",
         f"--results_dir={tmp_path / 'results'}", f"--work_dir={tmp_path / 'work'}", "--threads=1", *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )


def section_table(text, section):
    """Rows of a section's table as {label: {column: cell}}."""
    begin, end = common.markers(section)
    body = text[text.index(begin): text.index(end)]
    table = body[: body.index("Test metrics of the users")] if "Test metrics of the users" in body else body
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = dict(zip(header, cells))
    return body, rows


def test_two_runs_fill_two_sections_and_report_failures(tiny_data, tmp_path):
    first = run_script(
        tiny_data, tmp_path, "--models", "SASRec", "SASRec@seq", "NoSuchModel", "--section=first",
        "--set", *TINY_SETTINGS, "--model_args", "SASRec@seq:train_mode=sequence",
    )
    assert first.returncode == 1, first.stdout + first.stderr  # one model failed
    results = tmp_path / "results" / f"{tiny_data[1]}.md"
    text = results.read_text()
    body, rows = section_table(text, "first")
    assert list(rows) == ["SASRec", "SASRec@seq", "NoSuchModel"]
    for label in ("SASRec", "SASRec@seq"):
        row = rows[label]
        assert row["Status"] == "ok"
        for column in ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"):
            assert 0.0 <= float(row[column]) <= 1.0
        assert float(row["NDCG@10"]) <= float(row["HR@10"])
        assert int(row["Epochs"]) == 1 and int(row["Best epoch"]) == 1
        for column in ("s/epoch", "Valid eval s", "Test eval s", "Total s", "Peak RSS MB"):
            assert float(row[column]) >= 0
        assert float(row["s/epoch"]) > 0 and float(row["Peak RSS MB"]) > 100  # torch alone takes more
        assert float(row["Total s"]) > float(row["s/epoch"])
    assert rows["SASRec"]["× SASRec"] == "1.00"
    assert float(rows["SASRec@seq"]["× SASRec"]) > 0
    assert rows["NoSuchModel"]["Status"] == "failed"
    assert re.search(r"- `NoSuchModel`: ConfigError: unknown model 'NoSuchModel'", body)
    assert "CPU protocol: hidden_size=64" in body and "train_mode=sequence" in body
    assert "python " + os.path.relpath(SCRIPT, tmp_path) in body and "--section=first" in body
    assert "recbole 1.2.1" in body and "Incomplete" not in body

    raw = json.loads((tmp_path / "results" / f"{tiny_data[1]}-first.json").read_text())
    by_label = {r["label"]: r for r in raw["records"]}
    assert by_label["SASRec@seq"]["settings"]["train_mode"] == "sequence"
    assert by_label["SASRec"]["settings"]["train_mode"] == "prefix"
    assert by_label["SASRec"]["settings"]["hidden_size"] == 64
    assert len(by_label["SASRec"]["epoch_seconds"]) == 1 and len(by_label["SASRec"]["valid_eval_seconds"]) == 1
    assert by_label["SASRec"]["valid_eval_seconds"][0] > 0 and by_label["SASRec"]["test_eval_seconds"] > 0
    assert by_label["SASRec"]["torch_threads"] == 1
    assert by_label["NoSuchModel"]["status"] == "failed"
    # checkpoints are removed once tested unless --keep_checkpoints
    assert not list((tmp_path / "work").rglob("*.pth"))

    second = run_script(tiny_data, tmp_path, "--models", "GRU4Rec", "--section=second", "--set", *TINY_SETTINGS, "hidden_size=32", "sparse_users=[27]")
    assert second.returncode == 0, second.stdout + second.stderr
    text2 = results.read_text()
    assert text2.index(common.markers("first")[0]) < text2.index(common.markers("second")[0])
    first_block = text[text.index(common.markers("first")[0]): text.index(common.markers("first")[1])]
    assert first_block in text2  # the first section is untouched, byte for byte
    body2, rows2 = section_table(text2, "second")
    assert rows2["GRU4Rec"]["Status"] == "ok" and rows2["GRU4Rec"]["× reference"] == "–"
    assert "no SASRec in this run" in body2
    assert "hidden_size=32" in body2  # --set wins over the CPU protocol
    # sparse-user metrics get a table of their own, not extra columns in the main one
    assert "Users" not in body2.split("Test metrics of the users")[0]
    group_table = body2.split("users with at most 27 training interactions")[1]
    group_row = [line for line in group_table.splitlines() if line.startswith("| `GRU4Rec`")][0]
    cells = [c.strip() for c in group_row.strip("|").split("|")]
    raw2 = json.loads((tmp_path / "results" / f"{tiny_data[1]}-second.json").read_text())
    test2 = raw2["records"][0]["test_result"]
    assert int(cells[1]) == test2["users (history<=27)"] > 0
    assert cells[2:] == [f"{test2[f'{m}@{k} (history<=27)']:.4f}" for m in ("hit", "ndcg") for k in (5, 10, 20)]
    assert common.group_title("cloth, cold-start") == "group `cloth, cold-start` (cross-domain dataset: domain, user group)"


def test_sigterm_stops_the_worker_and_marks_the_section_incomplete(tiny_data, tmp_path):
    data_path, name = tiny_data
    results = tmp_path / "results" / f"{name}.md"
    process = subprocess.Popen(
        [sys.executable, SCRIPT, f"--dataset={name}", f"--data_path={data_path}", "--models", "SASRec", "GRU4Rec",
         f"--results_dir={tmp_path / 'results'}", f"--work_dir={tmp_path / 'work'}", "--section=stopped"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert "writing section" in process.stdout.readline()
    assert "[1/2] SASRec: running" in process.stdout.readline()
    body, rows = section_table(results.read_text(), "stopped")
    assert rows["SASRec"]["Status"] == "running" and rows["GRU4Rec"]["Status"] == "not run yet"
    process.terminate()
    assert process.wait(timeout=30) == 128 + 15
    body, rows = section_table(results.read_text(), "stopped")
    assert "Incomplete run" in body and "- `SASRec`: interrupted by SIGTERM" in body
    assert rows["SASRec"]["Status"] == "failed" and rows["GRU4Rec"]["Status"] == "not run yet"
    assert "has not run yet" not in body  # SASRec, the reference, did run (and was stopped)
    # the worker was in a process group of its own; it must be gone with its parent
    worker_jobs = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True).stdout
    assert worker_jobs.strip() == ""


def test_gpu_smoke_without_a_gpu_says_so_in_one_line_and_exits_0(capsys):
    import torch

    from benchmarks import gpu_smoke

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script's GPU path is run by hand (README, On a GPU)")
    assert gpu_smoke.main([]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("gpu_smoke: no CUDA device here") and "\n" not in out
