"""benchmarks/worker.py with a resume key: a run stopped part-way (a timeout, a stop, the end of a
session) goes on from its last evaluated epoch when its job is started again, and ends as the run
that was never stopped does; the state of a run of another key is never resumed."""

import glob
import os

from benchmarks import worker
from conftest import tiny_config


def job(tiny_data, folder, epochs, key, stopping_step=10):
    config = tiny_config(tiny_data, model="SASRec", train_mode="sequence", eval_step=1, stopping_step=stopping_step, seed=5)
    return {
        "model": "SASRec", "dataset": tiny_data[1], "config_file_list": [], "threads": 1, "resume_key": key,
        "config_dict": {**config, "epochs": epochs, "checkpoint_dir": str(folder)},
    }


def stopped_run(tiny_data, folder, epochs, key, stopping_step=10):
    """What a worker with ``key`` does up to its ``epochs``-th epoch, without its clean-up at the end
    (a worker killed there leaves the same files)."""
    from recbole_diffusion.quick_start import run

    started = job(tiny_data, folder, epochs, key, stopping_step)
    assert worker.resumable_checkpoint(str(folder), key) is None
    run(model="SASRec", dataset=tiny_data[1], config_dict={**started["config_dict"], "save_last_checkpoint": True}, verbose=False)
    left = glob.glob(os.path.join(folder, "*-last.pth"))
    assert len(left) == 1
    return left[0]


def best_beside(last_file):
    """The best checkpoint the trainer writes beside ``last_file``."""
    return last_file.replace("-last.pth", ".pth")


def test_a_stopped_run_resumes_from_its_last_epoch_and_ends_as_the_whole_run(tiny_data, in_tmp_dir):
    whole = worker.run_job(job(tiny_data, in_tmp_dir / "whole", 4, None))
    stopped_run(tiny_data, in_tmp_dir / "stopped", 2, "key-1")
    resumed = worker.run_job(job(tiny_data, in_tmp_dir / "stopped", 4, "key-1"))
    assert resumed["resumed_after_epochs"] == 2 and len(resumed["epoch_seconds"]) == 2
    assert resumed["epochs_run"] == whole["epochs_run"] == 4 and resumed["best_epoch"] == whole["best_epoch"]
    assert resumed["test_result"] == whole["test_result"]
    assert glob.glob(str(in_tmp_dir / "stopped" / "*-last.pth")) == []  # finished: nothing left to resume


def test_the_state_of_a_run_of_another_key_is_removed_not_resumed(tiny_data, in_tmp_dir):
    stale = stopped_run(tiny_data, in_tmp_dir / "runs", 2, "old-code")
    assert os.path.exists(best_beside(stale))
    fresh = worker.run_job(job(tiny_data, in_tmp_dir / "runs", 3, "new-code"))
    assert "resumed_after_epochs" not in fresh and len(fresh["epoch_seconds"]) == 3
    assert not os.path.exists(stale) and not os.path.exists(best_beside(stale))  # no file of the abandoned run stays


def test_a_resumed_run_that_fails_leaves_nothing_to_resume(tiny_data, in_tmp_dir, monkeypatch):
    import pytest

    from recbole_diffusion import quick_start

    last = stopped_run(tiny_data, in_tmp_dir / "runs", 2, "key-1")

    def fail(**kwargs):
        raise RuntimeError("lost the machine")

    monkeypatch.setattr(quick_start, "run", fail)
    with pytest.raises(RuntimeError, match="lost the machine"):
        worker.run_job(job(tiny_data, in_tmp_dir / "runs", 4, "key-1"))
    assert not os.path.exists(last) and not os.path.exists(best_beside(last))


def test_an_early_stopped_run_resumed_counts_the_epochs_it_trained(tiny_data, in_tmp_dir):
    whole = worker.run_job(job(tiny_data, in_tmp_dir / "whole", 30, None, stopping_step=0))
    stopped_run(tiny_data, in_tmp_dir / "stopped", 30, "key-1", stopping_step=0)
    resumed = worker.run_job(job(tiny_data, in_tmp_dir / "stopped", 30, "key-1", stopping_step=0))
    assert whole["epochs_run"] < 30 and resumed["epoch_seconds"] == []
    assert (resumed["epochs_run"], resumed["best_epoch"]) == (whole["epochs_run"], whole["best_epoch"])
    assert resumed["test_result"] == whole["test_result"]


def test_the_state_of_a_run_on_other_data_is_removed_not_resumed(tiny_data, in_tmp_dir):
    """The resume key names settings and code, not where the data lies: the same command on another
    data folder starts over."""
    import shutil

    data_path, name = tiny_data
    stale = stopped_run(tiny_data, in_tmp_dir / "runs", 2, "key-1")
    moved = in_tmp_dir / "moved"
    shutil.copytree(os.path.join(data_path, name), moved / name)
    fresh = worker.run_job(job((str(moved), name), in_tmp_dir / "runs", 3, "key-1"))
    assert "resumed_after_epochs" not in fresh and len(fresh["epoch_seconds"]) == 3
    assert not os.path.exists(stale) and not os.path.exists(best_beside(stale))


def test_an_unreadable_last_epoch_state_is_removed_and_the_run_starts_over(tiny_data, in_tmp_dir):
    """A last-epoch checkpoint cut short (the machine went down while it was written, on a file
    system without atomic renames) is not resumed, and does not fail every later attempt."""
    last = stopped_run(tiny_data, in_tmp_dir / "runs", 2, "key-1")
    with open(last, "wb") as handle:
        handle.write(b"not a checkpoint")
    fresh = worker.run_job(job(tiny_data, in_tmp_dir / "runs", 3, "key-1"))
    assert "resumed_after_epochs" not in fresh and len(fresh["epoch_seconds"]) == 3
    assert not os.path.exists(last) and not os.path.exists(best_beside(last))
