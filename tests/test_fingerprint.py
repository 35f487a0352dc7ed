"""The behaviour fingerprint of benchmarks/fingerprint.py: the same for the same code and settings,
the same after a change that computes the same thing (a comment in a model file), different after a
change of what the model computes or of a setting; an option renamed with its readers keeps it."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fingerprint_of(repo, *args):
    """The fingerprint printed by ``repo``'s benchmarks/fingerprint.py (its own package first on the path)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo}
    out = subprocess.run(
        [sys.executable, os.path.join(repo, "benchmarks", "fingerprint.py"), *args],
        capture_output=True, text=True, env=env, cwd=repo, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """A copy of the code a fingerprint reads, which a test may edit."""
    return copy_of_repo(tmp_path_factory.mktemp("repo"))


def append(path, text):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def test_fingerprint_follows_behaviour_not_text(repo_copy):
    model_file = repo_copy / "recbole_diffusion" / "model" / "sequential_recommender" / "diffrec.py"
    original = fingerprint_of(str(repo_copy), "--model=DiffRec")
    assert len(original) == 16
    assert fingerprint_of(str(repo_copy), "--model=DiffRec") == original  # seeded: the same twice

    append(model_file, "\n# a comment changes the file, not what the model computes\n")
    assert fingerprint_of(str(repo_copy), "--model=DiffRec") == original

    # full-sort scores in reverse item order: the same training, other ranks
    append(model_file, "\n_scores = DiffRec.full_sort_predict\nDiffRec.full_sort_predict = lambda self, interaction: _scores(self, interaction).flip(-1)\n")
    assert fingerprint_of(str(repo_copy), "--model=DiffRec") != original


def copy_of_repo(folder):
    for part in ("recbole_diffusion", "properties", "benchmarks"):
        shutil.copytree(os.path.join(REPO, part), folder / part, ignore=shutil.ignore_patterns("__pycache__", "logs", "results"))
    return folder


def replace_in(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_renaming_an_option_keeps_the_fingerprint_and_a_new_default_changes_it(tmp_path):
    """The model YAML counts through what the run does with it: an option renamed in the YAML and
    where the model reads it computes the same thing; a changed default does not."""
    repo = copy_of_repo(tmp_path)
    model_file = repo / "recbole_diffusion" / "model" / "sequential_recommender" / "diffrec.py"
    yaml_file = repo / "properties" / "model" / "DiffRec.yaml"
    original = fingerprint_of(str(repo), "--model=DiffRec")

    replace_in(yaml_file, "n_sample_draws:", "sample_draws:")
    replace_in(model_file, '"n_sample_draws"', '"sample_draws"')
    assert fingerprint_of(str(repo), "--model=DiffRec") == original

    replace_in(yaml_file, "sample_draws: 10", "sample_draws: 3")
    assert fingerprint_of(str(repo), "--model=DiffRec") != original

    # an option whose effect the two synthetic epochs cannot show (UNSEEN) counts by its value
    replace_in(yaml_file, "sample_draws: 3", "sample_draws: 10")
    replace_in(yaml_file, "loss_history_size: 10", "loss_history_size: 20")
    assert fingerprint_of(str(repo), "--model=DiffRec") != original


def test_upgraded_follows_the_chain_of_definitions(tmp_path, monkeypatch):
    from benchmarks import fingerprint

    table = tmp_path / "upgrades.json"
    table.write_text(json.dumps({"pairs": {"one": "two", "two": "three", "loop": "loop"}}))
    monkeypatch.setattr(fingerprint, "UPGRADES_FILE", str(table))
    assert fingerprint.upgraded("one") == "three" and fingerprint.upgraded("two") == "three"
    assert fingerprint.upgraded("other") == "other" and fingerprint.upgraded("loop") == "loop"


def test_fingerprint_follows_the_settings():
    base = fingerprint_of(REPO, "--model=SASRec", "--set", "train_mode=sequence")
    assert fingerprint_of(REPO, "--model=SASRec", "--set", "train_mode=sequence", "learning_rate=0.01") != base
    # a setting that points at another run's checkpoint is not part of the synthetic run
    assert fingerprint_of(REPO, "--model=SASRec", "--set", "train_mode=sequence", "item_table=checkpoint:Other") == base


def test_row_files_are_hashed_not_read_by_the_synthetic_run():
    """The synthetic dataset has no row files: row_split is left out of its run and hashed as a value."""
    base = fingerprint_of(REPO, "--model=SASRec", "--dataset=cloth-sport")
    rows = "row_split={'train': 'raw/a.csv', 'test': 'raw/b.csv'}"
    with_rows = fingerprint_of(REPO, "--model=SASRec", "--dataset=cloth-sport", "--set", rows)
    other_rows = fingerprint_of(REPO, "--model=SASRec", "--dataset=cloth-sport", "--set", rows.replace("b.csv", "c.csv"))
    assert len({base, with_rows, other_rows}) == 3


def test_the_protocol_s_sampled_settings_have_a_fingerprint():
    """The i2VAE protocol's sampled runs: eval_negative_pool (it reads the row files) is hashed as a
    value like row_split; on a per-domain file, whose synthetic stand-in is a plain dataset that refuses
    eval_negatives, that option is left out of the synthetic run."""
    rows = "row_split={'train': 'raw/a.csv', 'test': 'raw/b.csv'}"
    sampled = fingerprint_of(REPO, "--model=SASRec", "--dataset=cloth-sport", "--set", rows, "eval_negatives=999")
    pooled = fingerprint_of(REPO, "--model=SASRec", "--dataset=cloth-sport", "--set", rows, "eval_negatives=999", "eval_negative_pool=rows")
    assert sampled != pooled
    plain = fingerprint_of(REPO, "--model=SASRec", "--dataset=cloth-sport-cloth", "--set", rows)
    assert fingerprint_of(REPO, "--model=SASRec", "--dataset=cloth-sport-cloth", "--set", rows, "eval_negatives=999") == plain


def test_a_failing_synthetic_run_is_an_error():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "fingerprint.py"), "--model=SASRec", "--set", "n_heads=3"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert out.returncode == 1 and "fingerprint run of SASRec failed" in out.stderr
