"""A killed run resumed from its checkpoint ends where the uninterrupted run ends: train k epochs
(the run that dies), resume from its checkpoint with the n-epoch settings, and the best valid and
the test metrics equal those of an n-epoch run with the same seed. The checkpoint is the best-valid
one, as RecBole writes it, so the resumed run replays the epochs after it with the same random
numbers (weights, optimizer, early-stopping counters and every random stream are in the file)."""

import pytest
import torch

from conftest import tiny_config

CASES = [
    pytest.param("SASRec", {"train_mode": "sequence"}, id="SASRec"),
    pytest.param("DiffRec", {}, id="DiffRec"),  # its step sampler's loss history is in the state dict
    pytest.param("ADARec", {}, id="ADARec"),
]
EPOCHS, KILLED_AFTER = 4, 2


def one_thread_run(**kwargs):
    from recbole_diffusion.quick_start import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(verbose=False, **kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("model, overrides", CASES)
def test_resumed_run_ends_where_the_uninterrupted_one_does(tiny_data, in_tmp_dir, model, overrides, device):
    config = tiny_config(tiny_data, device=device, model=model, eval_step=1, stopping_step=10, seed=5, **overrides)
    whole = one_thread_run(config_dict={**config, "epochs": EPOCHS, "checkpoint_dir": "whole"})
    killed = one_thread_run(config_dict={**config, "epochs": KILLED_AFTER, "checkpoint_dir": "killed"})
    resumed = one_thread_run(config_dict={**config, "epochs": EPOCHS, "checkpoint_dir": "killed"}, resume_file=killed["saved_model_file"])
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert resumed["test_result"] == whole["test_result"]
    assert len(resumed["epoch_seconds"]) < EPOCHS  # it did resume, not start over


@pytest.mark.parametrize("model, overrides", CASES[:2])
def test_a_run_resumed_from_its_last_epoch_continues_it(tiny_data, in_tmp_dir, model, overrides):
    """``save_last_checkpoint``: the state after every evaluated epoch in ``<checkpoint>-last.pth``;
    resumed from it, the run goes on from that epoch (no epoch replayed), still keeps and tests its
    best checkpoint, and ends as the uninterrupted run (which wrote no such file) does."""
    import os

    config = tiny_config(tiny_data, model=model, eval_step=1, stopping_step=10, seed=5, **overrides)
    whole = one_thread_run(config_dict={**config, "epochs": EPOCHS, "checkpoint_dir": "whole"})
    killed = one_thread_run(config_dict={**config, "epochs": KILLED_AFTER, "checkpoint_dir": "killed", "save_last_checkpoint": True})
    last = killed["saved_model_file"].replace(".pth", "-last.pth")
    assert os.listdir("whole") == [os.path.basename(whole["saved_model_file"])] and os.path.isfile(last)
    resumed = one_thread_run(config_dict={**config, "epochs": EPOCHS, "checkpoint_dir": "killed", "save_last_checkpoint": True}, resume_file=last)
    assert len(resumed["epoch_seconds"]) == EPOCHS - KILLED_AFTER
    assert resumed["saved_model_file"] == killed["saved_model_file"]
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert resumed["test_result"] == whole["test_result"]


def test_a_resume_without_the_random_streams_differs(tiny_data, in_tmp_dir, monkeypatch):
    """The check can fail: the same resume with the random streams left as the fresh process has
    them ends elsewhere."""
    from recbole_diffusion import trainer as trainers

    config = tiny_config(tiny_data, model="SASRec", train_mode="sequence", eval_step=1, stopping_step=10, seed=5, hidden_dropout_prob=0.5)
    whole = one_thread_run(config_dict={**config, "epochs": EPOCHS, "checkpoint_dir": "whole"})
    killed = one_thread_run(config_dict={**config, "epochs": KILLED_AFTER, "checkpoint_dir": "killed"})
    monkeypatch.setattr(trainers, "restore_random_state", lambda state, train_data, process_state=None: None)
    resumed = one_thread_run(config_dict={**config, "epochs": EPOCHS, "checkpoint_dir": "killed"}, resume_file=killed["saved_model_file"])
    assert resumed["test_result"] != whole["test_result"] or resumed["best_valid_result"] != whole["best_valid_result"]


def test_resume_from_the_command_line(tiny_data, in_tmp_dir, capsys):
    import yaml

    from recbole_diffusion import cli

    config = tiny_config(tiny_data, model="SASRec", train_mode="sequence", seed=5)
    with open("run.yaml", "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle)
    dataset = f"--dataset={tiny_data[1]}"  # the command line's dataset (default ml-100k) wins over a file's, as in RecBole
    assert cli.main(["--model=SASRec", dataset, "--config_files=run.yaml", "--epochs=1"]) == 0
    checkpoint = next(line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("checkpoint: "))
    assert cli.main(["--model=SASRec", dataset, "--config_files=run.yaml", "--epochs=2", f"--checkpoint={checkpoint}"]) == 0
    assert "test result" in capsys.readouterr().out
    assert cli.main(["--model=SASRec", dataset, "--config_files=run.yaml", "--checkpoint=missing.pth"]) == 2
    assert "--checkpoint: missing.pth is not a file" in capsys.readouterr().err


def test_resume_reads_the_checkpoint_on_the_cpu_whatever_the_device(tiny_data, in_tmp_dir, monkeypatch):
    """On a GPU, a checkpoint read with map_location=cuda puts its random-number states on the GPU, and
    torch.set_rng_state / Generator.set_state take CPU byte tensors only. The resume must read it on the
    CPU: with the trainer's device set to ``meta`` (what a GPU-side map does to a CPU test), it still resumes."""
    from recbole_diffusion import compat, trainer as trainers
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation, get_trainer

    config = tiny_config(tiny_data, model="SASRec", train_mode="sequence", seed=5)
    killed = one_thread_run(config_dict={**config, "epochs": 1, "checkpoint_dir": "killed"})
    maps = []
    real_load = compat.load_checkpoint
    monkeypatch.setattr(trainers, "load_checkpoint", lambda path, map_location="cpu": maps.append(map_location) or real_load(path, map_location))
    config = Config(model="SASRec", config_dict={**config, "epochs": 2, "checkpoint_dir": "killed"})
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, build_model(config, train_data))
    trainer.device = torch.device("meta")  # where a GPU run's map_location=self.device would put the states
    trainer.resume_checkpoint(killed["saved_model_file"])
    assert maps == ["cpu"]
    trainer.device = torch.device("cpu")
    trainer.fit(train_data, valid_data, saved=False)  # restores the random states: CPU byte tensors
    assert len(trainer.epoch_seconds) == 1


def test_the_test_split_evaluated_every_epoch_is_reported_and_changes_nothing(tiny_data, in_tmp_dir, monkeypatch):
    """``eval_test_every_epoch``: one test result per validation, the last one the final weights'
    test metrics, logged to W&B under a head of their own; the selection, the best valid and the
    tested checkpoint are those of a plain run; a run resumed from its last epoch keeps the results
    of the epochs before."""
    from recbole.utils.wandblogger import WandbLogger

    heads = []
    monkeypatch.setattr(WandbLogger, "log_eval_metrics", lambda self, metrics, head="eval": heads.append(head))
    config = tiny_config(tiny_data, model="SASRec", train_mode="sequence", eval_step=1, stopping_step=10, seed=5, epochs=EPOCHS)
    plain = one_thread_run(config_dict={**config, "checkpoint_dir": "plain"})
    assert heads == ["eval"] * (EPOCHS + 1)  # every validation and the test
    heads.clear()
    reported = one_thread_run(config_dict={**config, "checkpoint_dir": "reported", "eval_test_every_epoch": True}, saved=False)
    assert heads == ["eval", "test_each_epoch"] * EPOCHS + ["eval"]
    assert "test_results_per_epoch" not in plain
    assert len(reported["test_results_per_epoch"]) == EPOCHS
    assert reported["test_results_per_epoch"][-1] == pytest.approx(dict(reported["test_result"]))  # saved=False: the final weights
    assert reported["best_valid_result"] == plain["best_valid_result"]
    assert len(reported["eval_seconds"]) == len(plain["eval_seconds"])
    killed = one_thread_run(config_dict={**config, "epochs": KILLED_AFTER, "checkpoint_dir": "killed", "eval_test_every_epoch": True,
                                         "save_last_checkpoint": True})
    last = killed["saved_model_file"].replace(".pth", "-last.pth")
    resumed = one_thread_run(config_dict={**config, "checkpoint_dir": "killed", "eval_test_every_epoch": True, "save_last_checkpoint": True},
                             resume_file=last)
    assert resumed["test_results_per_epoch"] == reported["test_results_per_epoch"]
    assert resumed["test_result"] == plain["test_result"]


def test_a_last_epoch_checkpoint_of_a_finished_or_stopped_run_trains_and_overwrites_nothing(tiny_data, in_tmp_dir):
    """A run killed after its last epoch (or after early stopping), before its test, resumed from its
    last-epoch checkpoint: no epoch is trained again and the best checkpoint is tested, not
    overwritten by the last epoch's weights."""
    import os

    config = tiny_config(tiny_data, model="SASRec", train_mode="sequence", eval_step=1, seed=5, hidden_dropout_prob=0.5)
    for name, settings in (("finished", {"epochs": EPOCHS, "stopping_step": 10}), ("stopped", {"epochs": 30, "stopping_step": 0})):
        run = {**config, **settings, "checkpoint_dir": name, "save_last_checkpoint": True}
        whole = one_thread_run(config_dict=run)
        best = whole["saved_model_file"]
        with open(best, "rb") as handle:
            best_bytes = handle.read()
        last = best.replace(".pth", "-last.pth")
        assert os.path.isfile(last)
        resumed = one_thread_run(config_dict=run, resume_file=last)
        assert resumed["epoch_seconds"] == [], name
        assert resumed["test_result"] == whole["test_result"], name
        with open(best, "rb") as handle:
            assert handle.read() == best_bytes, name
        if name == "stopped":
            assert len(whole["epoch_seconds"]) < 30  # it did stop early
