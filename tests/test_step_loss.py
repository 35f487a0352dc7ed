"""benchmarks/step_loss.py: what a DiffRec checkpoint reads from its noised target slot, per step."""

import json
import math
import os
import sys

import pytest
import torch

from conftest import DEVICES, REPO, TINY_USERS, run_benchmark_script, tiny_config, train_saved

SCRIPT = os.path.join(REPO, "benchmarks", "step_loss.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import step_loss  # noqa: E402

N = 20


@pytest.fixture(scope="module", params=DEVICES)
def trained(request, tiny_data, tmp_path_factory):
    """A tiny DiffRec trained one epoch (N = 20 steps) on each device present, saved: the script
    reads it on the device it was trained on."""
    return train_saved("DiffRec", tiny_data, tmp_path_factory.mktemp("trained"),
                       make_config=lambda data, **o: tiny_config(data, device=request.param, **o), n_diffusion_steps=N, n_sample_draws=2)


def run_script(tmp_path, *args):
    return run_benchmark_script("step_loss.py", tmp_path, *args)


def test_rank_metrics_count_ranks_over_real_items_only():
    target = torch.tensor([1, 1, 1])
    logits = torch.full((3, 30), -1.0)
    logits[:, 0] = 100.0  # padding: never ranked
    logits[:, 1] = 0.0
    logits[1, 2:11] = 1.0  # 9 items above the target: rank 9, a hit
    logits[2, 2:12] = 1.0  # 10 above: rank 10, a miss
    hits, ndcg = step_loss.rank_metrics(logits, target)
    assert hits == 2
    assert ndcg == pytest.approx(1.0 + 1.0 / math.log2(11))


def test_one_row_per_step_and_the_pure_noise_row(trained, tmp_path):
    done = run_script(tmp_path, f"--checkpoint={trained['saved_model_file']}", "--steps", "1", "10", str(N))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"{TINY_USERS} validation users" in lines[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| ") and "step n" not in line]
    assert [row[0] for row in rows] == ["1", "10", str(N), "pure noise"]
    for row in rows:
        ce, mse, hr, ndcg = map(float, row[3:])
        assert 0 < ce and 0 <= mse and 0 <= ndcg <= hr <= 1
    # the slot's signal falls with the step
    assert float(rows[0][2]) > float(rows[1][2]) > float(rows[2][2])
    assert os.listdir(tmp_path) == []  # writes nothing


def test_refuses_other_models_and_steps_outside_the_schedule(trained, tmp_path):
    from recbole_diffusion.compat import load_checkpoint

    bad_step = run_script(tmp_path, f"--checkpoint={trained['saved_model_file']}", "--steps", "0", str(N + 1))
    assert bad_step.returncode == 2 and bad_step.stderr.startswith(f"error: --steps: 0, {N + 1} outside 1..{N}")

    checkpoint = load_checkpoint(trained["saved_model_file"])
    config = json.loads(checkpoint["config"])
    config["model"] = "SASRec"
    checkpoint["config"] = json.dumps(config)
    torch.save(checkpoint, tmp_path / "sasrec.pth")
    other = run_script(tmp_path, f"--checkpoint={tmp_path / 'sasrec.pth'}")
    assert other.returncode == 2 and "a SASRec checkpoint" in other.stderr

    missing = run_script(tmp_path, f"--checkpoint={tmp_path / 'none.pth'}")
    assert missing.returncode == 2 and missing.stderr.startswith("error: --checkpoint")
    assert sorted(os.listdir(tmp_path)) == ["sasrec.pth"]
