"""What a newcomer types wrong gets one ``error:`` line naming the option or file, exit code 2, and
nothing written under saved/, log/ or log_tensorboard/: a misspelt option, a data_path that is not
there, zero epochs, a checkpoint that cannot continue this run, an unreadable file. And what the
command prints: no progress bars into a file, a table for grouped results, absolute paths."""

import os

import pytest

from conftest import tiny_config, train_saved
from recbole_diffusion import cli


def run_main(args, tmp_path, monkeypatch, capsys):
    """``cli.main(args)`` in ``tmp_path``: (exit code, stdout, stderr, files left in tmp_path)."""
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err, sorted(set(os.listdir(tmp_path)) - before)


@pytest.mark.parametrize("args, message", [
    (["--model=SASRec", "--hiden_size=64"], "hiden_size: unknown option for SASRec on ml-100k: no part of this run reads it. Did you mean hidden_size?"),
    (["--model=DiffRec", "--rounding_loss_weight=1.0"], "rounding_loss_weight: unknown option for DiffRec"),  # DreamRec's
    (["--model=GRU4Rec", "--n_layers=2"], "n_layers: unknown option for GRU4Rec on ml-100k: no part of this run reads it. Did you mean num_layers?"),
    (["--model=SASRec", "--epochs=0"], "epochs must be an integer >= 1"),
    (["--model=SASRec", "--data_path=/nonexistent"], "data_path: /nonexistent does not exist; leave --data_path out"),
])
def test_an_option_the_run_would_ignore_or_cannot_use_is_refused(tmp_path, monkeypatch, capsys, args, message):
    code, _, err, written = run_main([*args, "--dataset=ml-100k"], tmp_path, monkeypatch, capsys)
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert written == []


def test_a_data_path_that_holds_ml_100k_is_read_and_one_without_it_is_refused(tmp_path):
    from recbole_diffusion.config import Config
    from recbole_diffusion.errors import ConfigError

    (tmp_path / "ml-100k").mkdir()
    assert Config(model="SASRec", dataset="ml-100k", config_dict={"data_path": str(tmp_path)})["data_path"] == str(tmp_path / "ml-100k")
    with pytest.raises(ConfigError, match="holds no ml-100k/ folder"):
        Config(model="SASRec", dataset="ml-100k", config_dict={"data_path": str(tmp_path / "ml-100k")})


def test_a_config_file_may_hold_options_another_model_reads_and_the_run_logs_them(tiny_data, tmp_path):
    """A shared config file (RecBole users keep one for many models) is not refused for a key this
    model lacks: the run names it in its log instead."""
    import subprocess
    import sys

    from conftest import REPO

    (tmp_path / "shared.yaml").write_text("n_layers: 1\nhidden_size: 16\nshow_progress: False\n")
    data_path, name = tiny_data
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "run_recbole_diff.py"), "--model=GRU4Rec", f"--dataset={name}",
         f"--data_path={data_path}", "--epochs=1", "--config_files=shared.yaml", "--embedding_size=16"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    log = next(line for line in out.stdout.splitlines() if line.startswith("log: "))[len("log: "):]
    assert "options that no part of this run reads (ignored): n_layers\n" in open(log, encoding="utf-8").read()


# ----------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def sasrec_checkpoint(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    return train_saved("SASRec", tiny_data, folder, train_mode="sequence")["saved_model_file"]


def resume_args(tiny_data, checkpoint, *extra, model="SASRec", **options):
    data_path, name = tiny_data
    settings = {k: v for k, v in tiny_config(tiny_data, train_mode="sequence", **options).items()
                if k not in ("data_path", "dataset")}
    return [f"--model={model}", f"--dataset={name}", f"--data_path={data_path}", f"--checkpoint={checkpoint}",
            *(f"--{k}={v}" for k, v in settings.items()), *extra]


@pytest.mark.parametrize("extra, message", [
    (["--learning_rate=0.05"], "--checkpoint: a resume continues the stored run with its own options, and these differ: "
                               "learning_rate: trained with the default, given learning_rate=0.05"),
    (["--seed=7"], "seed: trained with the default, given seed=7"),
])
def test_a_resume_that_would_change_the_run_is_refused(tiny_data, sasrec_checkpoint, tmp_path, monkeypatch, capsys, extra, message):
    code, _, err, written = run_main(resume_args(tiny_data, sasrec_checkpoint, *extra), tmp_path, monkeypatch, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert written == []


def test_a_resume_with_the_runs_options_and_more_epochs_goes_on(tiny_data, sasrec_checkpoint, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "copy.pth"
    checkpoint.write_bytes(open(sasrec_checkpoint, "rb").read())
    code, out, err, _ = run_main(resume_args(tiny_data, checkpoint, epochs=2), tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert f"checkpoint: {checkpoint}" in out


@pytest.mark.parametrize("case, message", [
    ("truncated", "is truncated or not a torch checkpoint file"),
    ("other model", "is a run of model 'SASRec', not 'GRU4Rec'; resume it with --model=SASRec"),
    ("other dataset", "is a run of dataset"),
])
def test_a_checkpoint_that_cannot_continue_this_run_is_one_line(tiny_data, sasrec_checkpoint, tmp_path, monkeypatch, capsys, case, message):
    checkpoint, model, data = sasrec_checkpoint, "SASRec", tiny_data
    if case == "truncated":
        checkpoint = tmp_path / "cut.pth"
        checkpoint.write_bytes(open(sasrec_checkpoint, "rb").read()[:5000])
    elif case == "other model":
        model = "GRU4Rec"
    else:
        os.symlink(os.path.join(tiny_data[0], tiny_data[1]), tmp_path / "other")
        data = (str(tmp_path), "other")
    args = resume_args(data, checkpoint, model=model)
    if model == "GRU4Rec":
        args = [a for a in args if not a.startswith(("--n_heads", "--n_layers", "--inner_size"))]
    code, _, err, written = run_main(args, tmp_path, monkeypatch, capsys)
    assert code == 2 and message in err and err.startswith("error: --checkpoint: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not any(name in written for name in ("log", "log_tensorboard", "saved"))


# ----------------------------------------------------------------------------- files and output
def test_an_unreadable_interaction_file_is_named_as_unreadable(tiny_data, monkeypatch):
    from recbole_diffusion.config import Config
    from recbole_diffusion.data.atomic import check_atomic_files
    from recbole_diffusion.errors import DataError

    config = Config(model="SASRec", config_dict=tiny_config(tiny_data))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).endswith(".inter") else real_access(path, mode))
    with pytest.raises(DataError, match=r"tiny\.inter cannot be read \(permission denied\)"):
        check_atomic_files(config)


def test_a_failed_download_suggests_other_datasets_and_the_protocol_file():
    from recbole_diffusion.data.atomic import _dataset_help

    text = _dataset_help({"dataset": "amazon-beauty"})
    assert "--dataset=amazon-beauty" not in text and "--dataset=ml-1m" in text
    assert "--config_files=" in text and os.path.join("properties", "dataset", "amazon-beauty.yaml") in text


def test_close_model_names_are_listed_once():
    from recbole_diffusion.errors import ConfigError
    from recbole_diffusion.utils import get_model

    with pytest.raises(ConfigError) as info:
        get_model("DifRec")
    close = str(info.value).split("Close names: ")[1].split(".")[0].split(", ")
    assert close.count("DiffRec") == 1


def test_into_a_file_no_progress_bars_and_paths_are_absolute(tiny_data, tmp_path, monkeypatch, capsys):
    """stderr is not a terminal under pytest: the run draws no bar, and prints absolute paths."""
    data_path, name = tiny_data
    code, out, err, _ = run_main(["--model=SASRec", f"--dataset={name}", f"--data_path={data_path}", "--epochs=1",
                                  "--hidden_size=16", "--train_mode=sequence"], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert "it/s]" not in err and "Train " not in err
    checkpoint = next(line for line in out.splitlines() if line.startswith("checkpoint: "))[len("checkpoint: "):]
    log = next(line for line in out.splitlines() if line.startswith("log: "))[len("log: "):]
    assert os.path.isabs(checkpoint) and os.path.isfile(checkpoint) and os.path.isabs(log)


def test_grouped_results_print_as_a_table():
    text = cli.format_result("test result", {
        "ndcg@10": 0.0123, "hit@10": 0.02, "users (cloth, cold-start)": 243,
        "ndcg@10 (cloth, cold-start)": 0.0011, "hit@10 (cloth, cold-start)": 0.004,
    })
    lines = text.splitlines()
    assert lines[0] == "test result:" and lines[1].split() == ["ndcg@10", "hit@10", "users"]
    assert lines[2].split() == ["all", "0.0123", "0.0200", "-"]
    assert lines[3].split() == ["cloth,", "cold-start", "0.0011", "0.0040", "243"]
    assert cli.format_result("best valid", {"ndcg@10": 0.5}) == "best valid: {'ndcg@10': 0.5}"
