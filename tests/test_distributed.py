"""RecBole's multi-process route on CPU: 2 gloo processes on 127.0.0.1, for every plugin model and
SASRec. Each run trains 1 epoch on tiny data; the gathered metrics must equal one process
evaluating the saved checkpoint, the ranks must end with the same model, and only rank 0 writes."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO, tiny_config
from test_cross_domain import cd_config, write_two_domain_dataset

FAST_I2VAE = {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_cross_heads": 2, "n_pseudo_items": 4, "psg_epochs": 3,
              "psg_embedding_size": 8, "psg_batch_size": 256, "train_batch_size": 64}

# small eval batches, so that each of the two ranks scores several whole batches
SMALL = {"eval_batch_size": 16, "train_batch_size": 64}
MODELS = {
    "SASRec": {"train_mode": "sequence"},
    "DiffRec": {"n_sample_draws": 2},
    "DreamRec": {"n_sample_steps": 20, "rounding_loss_weight": 1.0},
    "ADARec": {},
    "AsarRec": {},
}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_domain(tmp_path_factory):
    return write_two_domain_dataset(tmp_path_factory.mktemp("ddp-i2vae"))


def config_of(model, tiny_data, two_domain, folder):
    if model == "i2VAE":
        config = cd_config(two_domain, "i2VAE", **FAST_I2VAE, eval_batch_size=16)
    else:
        config = tiny_config(tiny_data, **SMALL, **MODELS[model])
    config.update(checkpoint_dir=str(folder / "saved"), show_progress=False)
    return config


def run_in(folder, **kwargs):
    from recbole_diffusion.quick_start import run

    cwd = os.getcwd()
    os.chdir(folder)  # RecBole's log folder
    try:
        return run(saved=True, verbose=True, **kwargs)
    finally:
        os.chdir(cwd)


def evaluate_in_one_process(checkpoint, folder):
    """The checkpoint's test metrics in this process, with RecBole's log written under ``folder``."""
    from recbole_diffusion.quick_start import load_data_and_model
    from recbole_diffusion.utils import get_trainer

    cwd = os.getcwd()
    os.makedirs(folder, exist_ok=True)
    os.chdir(folder)
    try:
        config, model, _, _, _, test_data = load_data_and_model(checkpoint)
        assert config["single_spec"] and config["world_size"] is None
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        return dict(trainer.evaluate(test_data, load_best_model=False))
    finally:
        os.chdir(cwd)


def children_of_this_process():
    """The training processes this test process started that are still there (multiprocessing's
    resource tracker, which stays for the life of its parent, is not one)."""
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "spawn_main"], capture_output=True, text=True)
    return [pid for pid in out.stdout.split() if pid]


@pytest.mark.parametrize("model", ["SASRec", "DiffRec", "DreamRec", "ADARec", "AsarRec", "i2VAE"])
def test_two_gloo_processes_train_and_evaluate_as_one(model, tiny_data, two_domain, tmp_path, one_thread):
    config = config_of(model, tiny_data, two_domain, tmp_path)
    result = run_in(tmp_path, model=model, config_dict=config, nproc=2, port=free_port())
    ranks = result["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and len({r["pid"] for r in ranks}) == 2
    assert ranks[0]["train_batches"] == ranks[1]["train_batches"] > 0
    assert ranks[0]["state_digest"] == ranks[1]["state_digest"]  # the same model on both ranks
    assert ranks[0]["torch_seed"] != ranks[1]["torch_seed"]  # each with its own random draws
    # (equal zeros would show nothing; one epoch on tiny data hits little)
    assert sum(result["test_result"].values()) + sum(result["best_valid_result"].values()) > 0
    # the metrics gathered over both ranks are those of one process scoring every test user
    assert evaluate_in_one_process(result["saved_model_file"], tmp_path.parent / f"{tmp_path.name}-eval") == dict(result["test_result"])
    # only rank 0 writes: one checkpoint, one log, which names the world and both ranks
    assert os.listdir(tmp_path / "saved") == [os.path.basename(result["saved_model_file"])]
    logs = [f for _, _, files in os.walk(tmp_path / "log") for f in files]
    assert logs == [os.path.basename(result["log_file"])]
    assert len(os.listdir(tmp_path / "log_tensorboard")) == 1  # rank 0's
    text = open(result["log_file"], encoding="utf-8").read()
    assert "world_size = 2" in text and "rank 0 of 2" in text and "rank 1 of 2" in text
    assert "the same on all 2 ranks" in text
    assert children_of_this_process() == []


TWO_GPUS = torch.cuda.is_available() and torch.cuda.device_count() >= 2


@pytest.mark.skipif(not TWO_GPUS, reason="needs two CUDA devices")
@pytest.mark.parametrize("model", ["SASRec", "DiffRec", "DreamRec", "ADARec", "AsarRec", "i2VAE"])
def test_two_gpus_train_and_evaluate_as_one(model, tiny_data, two_domain, tmp_path):
    """RecBole's multi-GPU route (NCCL, one process per GPU): each rank on its own device, with its
    own random draws, the same model on both, and the gathered metrics those of one process."""
    config = {**config_of(model, tiny_data, two_domain, tmp_path), "gpu_id": "0,1"}
    result = run_in(tmp_path, model=model, config_dict=config, nproc=2, port=free_port())
    ranks = result["ranks"]
    assert sorted(r["device"] for r in ranks) == ["cuda:0", "cuda:1"]
    assert ranks[0]["state_digest"] == ranks[1]["state_digest"]
    assert ranks[0]["torch_seed"] != ranks[1]["torch_seed"]
    assert ranks[0]["cuda_seed"] != ranks[1]["cuda_seed"]  # each GPU's own dropout and noise after training
    assert evaluate_in_one_process(result["saved_model_file"], tmp_path.parent / f"{tmp_path.name}-eval") == dict(result["test_result"])
    assert children_of_this_process() == []


def test_diffrec_step_history_holds_the_steps_of_both_ranks(tiny_data, two_domain, tmp_path, one_thread):
    """DDP broadcasts rank 0's buffers, which would make the ranks' histories equal even without
    the sampler's gather; the count tells: one process records every training sequence once, two
    ranks together record them all (and the padding that evens their shares) in each history."""
    from recbole_diffusion.compat import load_checkpoint

    def recorded(result):
        state = load_checkpoint(result["saved_model_file"])["state_dict"]
        return int(state["step_sampler.loss_count"].sum())

    overrides = {"n_diffusion_steps": 1000, "n_sample_draws": 1}
    config = config_of("DiffRec", tiny_data, two_domain, tmp_path / "one")
    one = run_in(_made(tmp_path / "one"), model="DiffRec", config_dict={**config, **overrides})
    config = config_of("DiffRec", tiny_data, two_domain, tmp_path / "two")
    two = run_in(_made(tmp_path / "two"), model="DiffRec", config_dict={**config, **overrides}, nproc=2, port=free_port())
    assert two["ranks"][0]["state_digest"] == two["ranks"][1]["state_digest"]
    assert recorded(one) > 0
    assert recorded(one) <= recorded(two) < 2 * recorded(one)


def _made(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_checkpoints_resume_across_process_counts(tiny_data, two_domain, tmp_path, one_thread):
    """A checkpoint of 2 processes resumes in 1, and one of 1 process resumes in 2."""
    config = {**config_of("SASRec", tiny_data, two_domain, tmp_path), "eval_step": 1}
    two = run_in(tmp_path, model="SASRec", config_dict=config, nproc=2, port=free_port())
    resumed = run_in(tmp_path, model="SASRec", config_dict={**config, "epochs": 2}, resume_file=two["saved_model_file"])
    assert len(resumed["epoch_seconds"]) == 1  # only the second epoch trained
    one = run_in(tmp_path, model="SASRec", config_dict=config)
    resumed = run_in(tmp_path, model="SASRec", config_dict={**config, "epochs": 2}, resume_file=one["saved_model_file"],
                     nproc=2, port=free_port())
    assert len(resumed["epoch_seconds"]) == 1 and resumed["ranks"][0]["state_digest"] == resumed["ranks"][1]["state_digest"]


def test_objective_function_takes_the_launch(tiny_data, two_domain, tmp_path, one_thread):
    from recbole_diffusion.quick_start import objective_function

    config = {**config_of("SASRec", tiny_data, two_domain, tmp_path), "model": "SASRec"}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = objective_function(config_dict=config, nproc=2, port=free_port())
    finally:
        os.chdir(cwd)
    assert result["test_result"]["ndcg@10"] > 0 and os.listdir(tmp_path / "saved") == []


# ----------------------------------------------------------------------------- bad launches
@pytest.mark.parametrize("nproc, message", [(0, "--nproc: must be an integer >= 1"), (os.cpu_count() + 1, "CPU core")])
def test_impossible_process_counts_are_refused_before_any_process_starts(nproc, message, tiny_data, tmp_path):
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_in(tmp_path, model="SASRec", config_dict=tiny_config(tiny_data), nproc=nproc)
    assert children_of_this_process() == [] and not os.path.exists(tmp_path / "log")


def test_a_busy_port_is_refused(tiny_data, tmp_path):
    from recbole_diffusion.errors import ConfigError

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--port={port}: .* already in use"):
            run_in(tmp_path, model="SASRec", config_dict=tiny_config(tiny_data), nproc=2, port=port)


def test_a_rank_that_fails_stops_every_rank_and_its_error_is_raised(tiny_data, tmp_path, one_thread):
    """A malformed data file is found by the ranks (the launcher only checks that the folder is
    there): the error comes back with its type and message, and no process is left."""
    from recbole_diffusion.errors import DataError

    broken = tmp_path / "data" / "broken"
    broken.mkdir(parents=True)
    (broken / "broken.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\n", encoding="utf-8")
    config = tiny_config((str(tmp_path / "data"), "broken"))
    with pytest.raises(DataError, match=r"rank \d: .*broken.inter, line 2"):
        run_in(tmp_path, model="SASRec", config_dict=config, nproc=2, port=free_port())
    assert children_of_this_process() == []


def test_a_config_value_alone_does_not_start_processes(tiny_data):
    from conftest import assert_config_error

    assert_config_error("SASRec", tiny_config(tiny_data, nproc=2), "nproc")


def test_command_line_refuses_a_bad_nproc(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "run_recbole_diff.py"), "--model=SASRec", "--nproc=0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 2 and "error: --nproc: must be an integer >= 1; got 0" in out.stderr
    assert os.listdir(tmp_path) == []


def test_rank_batches_cover_every_batch_once_in_the_one_process_layout():
    from recbole_diffusion.evaluation import RankBatchSampler

    shares = [list(RankBatchSampler(10, 3, rank, 2)) for rank in (0, 1)]
    assert shares == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9]]
    assert [len(RankBatchSampler(10, 3, rank, 2)) for rank in (0, 1)] == [6, 4]
    assert torch.equal(torch.tensor(sorted(shares[0] + shares[1])), torch.arange(10))


def test_benchmark_compares_one_and_two_processes_and_resumes(tiny_data, tmp_path):
    """benchmarks/distributed.py end to end on tiny data: a run per process count, stored; a second
    call trains nothing and rewrites the same page."""
    data_path, name = tiny_data
    command = [sys.executable, os.path.join(REPO, "benchmarks", "distributed.py"), f"--dataset={name}",
               f"--data_path={data_path}", "--models", "SASRec", "--nproc", "1", "2", "--epochs=1",
               f"--port={free_port()}", f"--results_dir={tmp_path / 'results'}", f"--work_dir={tmp_path / 'work'}"]
    env = {**os.environ, "PYTHONPATH": REPO}
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    stored = sorted(os.listdir(tmp_path / "results" / "distributed"))
    assert stored == [f"{name}-SASRec-nproc1.json", f"{name}-SASRec-nproc2.json"]
    page = (tmp_path / "results" / "distributed.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| `SASRec`")]
    assert len(rows) == 2 and rows[0].split("|")[2].strip() == "1" and rows[1].split("|")[2].strip() == "2"
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and again.stdout.count(": stored") == 2
    assert (tmp_path / "results" / "distributed.md").read_text(encoding="utf-8") == page


@pytest.mark.parametrize("world", [2, 3, 4, 7])
@pytest.mark.parametrize("n", [1, 2, 5, 9, 40])
def test_shares_of_more_ranks_than_batches(world, n):
    """Every rank has at least one evaluation batch and the same number of training steps, also
    with more ranks than the one-process layout has batches (the CI runs only two processes)."""
    from recbole_diffusion.data.sequence import even_shares
    from recbole_diffusion.evaluation import RankBatchSampler, rank_batch_size

    if n >= world:
        size = rank_batch_size(256, n, world)
        shares = [list(RankBatchSampler(n, size, rank, world)) for rank in range(world)]
        assert all(shares) and sorted(i for share in shares for i in share) == list(range(n))
    plan = even_shares(list(range(n)), world)
    steps = {len(plan[rank::world]) for rank in range(world)}
    assert len(steps) == 1 and set(plan) == set(range(n))
