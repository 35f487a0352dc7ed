"""The plugin's foundation: name resolution, YAML overlay, errors, checkpoints, tuning."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "run_recbole_diff.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


# ----------------------------------------------------------------------------- names
def test_plugin_names_resolve_first_and_only_known_clashes_exist():
    from recbole_diffusion.utils import get_model, plugin_model_names, recbole_model_names

    known_clashes = {"diffrec"}  # RecBole's general DiffRec (Wang et al.) vs Du et al.'s sequential one
    recbole_names = set(recbole_model_names())
    for name in plugin_model_names():
        assert get_model(name).__module__.startswith("recbole_diffusion."), name
        if name.lower() in recbole_names:
            assert name.lower() in known_clashes, f"plugin model {name} silently shadows a RecBole model"


def test_builtin_names_still_resolve_to_recbole():
    from recbole.model.sequential_recommender.gru4rec import GRU4Rec
    from recbole.model.sequential_recommender.sasrec import SASRec

    from recbole_diffusion.utils import get_model

    assert get_model("SASRec") is SASRec
    assert get_model("GRU4Rec") is GRU4Rec


def test_unknown_model_lists_close_names():
    from recbole_diffusion.errors import ConfigError
    from recbole_diffusion.utils import get_model

    with pytest.raises(ConfigError) as info:
        get_model("SASRek")
    assert "SASRec" in str(info.value)


def test_recbole_model_yaml_never_leaks_into_a_plugin_model(monkeypatch, tiny_data):
    """A plugin model sharing a RecBole model's name gets none of that model's YAML keys."""
    import recbole
    import yaml

    from recbole_diffusion import utils
    from recbole_diffusion.config import Config
    from recbole.model.sequential_recommender.sasrec import SASRec

    class GRU4Rec(SASRec):  # a stand-in plugin model named like a RecBole model
        __module__ = "recbole_diffusion.model.sequential_recommender.gru4rec"

    monkeypatch.setattr(utils, "_plugin_model_class", lambda name: GRU4Rec if name == "GRU4Rec" else None)
    recbole_yaml = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", "GRU4Rec.yaml")
    with open(recbole_yaml) as handle:
        leaked = set(yaml.safe_load(handle)) - {"loss_type"}
    given = tiny_config(tiny_data, hidden_dropout_prob=0.1, attn_dropout_prob=0.1, hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.02, loss_type="CE")
    leaked -= set(given)
    config = Config(model="GRU4Rec", config_dict=given)
    assert config.model_class is GRU4Rec
    assert leaked and not leaked & set(config.final_config_dict), leaked & set(config.final_config_dict)
    # the same name as a RecBole model still gets RecBole's YAML
    builtin = Config(model="SASRec", config_dict=tiny_config(tiny_data))
    assert builtin["hidden_dropout_prob"] == 0.5


def test_plugin_yaml_overlay_and_dataset_yaml(tiny_data):
    from recbole_diffusion.config import Config

    config = Config(model="SASRec", dataset="amazon-beauty", config_dict={"data_path": "unused"})
    assert config["MAX_ITEM_LIST_LENGTH"] == 50
    assert config["valid_metric"] == "NDCG@10"
    assert config["topk"] == [5, 10, 20]
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["train_mode"] == "prefix"


def test_properties_found_from_installed_package(tmp_path):
    """properties/ must travel with a non-editable install (as package data)."""
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), REPO],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    target = tmp_path / "site"
    wheels = list(wheel_dir.glob("*.whl"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheels[0])],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    probe = "import recbole_diffusion.files as u; print(u.properties_dir()); print(u.hyper_dir())"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(target)),
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    props, hyper = out.stdout.split()
    assert props.startswith(str(target)) and os.path.isfile(os.path.join(props, "overall.yaml"))
    assert os.path.isfile(os.path.join(props, "dataset", "amazon-beauty.yaml"))
    assert hyper.startswith(str(target)) and os.path.isfile(os.path.join(hyper, "SASRec.hyper"))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model=SASRek", "--dataset=ml-100k"], "SASRec"),
        (["--model=SASRec", "--dataset=no-such-data", "--data_path=/nonexistent"], "no-such-data"),
        (["--model=SASRec", "--dataset=ml-100k", "--train_mode=fast"], "train_mode"),
        (["--model=SASRec", "--dataset=ml-100k", "--config_files=/nonexistent.yaml"], "/nonexistent.yaml"),
        (["--model=Pop", "--dataset=ml-100k", "--train_mode=sequence"], "train_mode"),
        (["--model=SASRec", "--dataset=ml-100k", "--epochs=many"], "epochs"),
        (["--model=SASRec", "--dataset=ml-100k", "--learning_rate=-0.1"], "learning_rate"),
        (["--model=SASRec", "--dataset=ml-100k", "--MAX_ITEM_LIST_LENGTH=0"], "MAX_ITEM_LIST_LENGTH"),
    ],
)
def test_bad_input_is_one_paragraph_and_exit_2(args, expected, tmp_path):
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.startswith("error: ") and expected in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "saved").exists() or not list((tmp_path / "saved").iterdir())


def test_missing_dataset_error_says_where_and_how(tmp_path):
    out = run_cli(["--model=SASRec", "--dataset=no-such-dataset", f"--data_path={tmp_path}"], cwd=tmp_path)
    assert out.returncode == 2
    assert str(tmp_path) in out.stderr and "dataset/README.md" in out.stderr and "--data_path" in out.stderr


@pytest.mark.parametrize(
    "content, expected",
    [
        ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\n", "line 3"),
        ("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tyesterday\n", "line 2"),
        ("user_id\titem_id:token\ttimestamp:float\n1\t2\t3\n", "line 1"),
        ("user_id:token\ttimestamp:float\n1\t3\n", "item_id"),
        ("", "empty"),
    ],
)
def test_malformed_atomic_file_names_file_and_line(content, expected, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad.inter").write_text(content)
    out = run_cli(["--model=SASRec", "--dataset=bad", f"--data_path={tmp_path}"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "bad.inter" in out.stderr and expected in out.stderr and "Traceback" not in out.stderr


# ----------------------------------------------------------------------------- run, checkpoints
def test_cli_runs_builtin_in_both_modes_and_prints_results(tiny_data, tmp_path):
    data_path, name = tiny_data
    for mode in ("prefix", "sequence"):
        out = run_cli(
            ["--model=SASRec", f"--dataset={name}", f"--data_path={data_path}", "--epochs=1", "--hidden_size=16",
             "--inner_size=32", "--MAX_ITEM_LIST_LENGTH=20", f"--train_mode={mode}", "--show_progress=False"],
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert "best valid:" in out.stdout and "test result:" in out.stdout and "ndcg@10" in out.stdout


def test_checkpoint_is_weights_only_and_restores_the_model(tiny_data, in_tmp_dir):
    from recbole_diffusion.quick_start import load_data_and_model, run

    result = run(model="SASRec", config_dict=tiny_config(tiny_data, train_mode="sequence", epochs=2), verbose=False, return_trainer=True)
    path = result["saved_model_file"]
    checkpoint = torch.load(path, weights_only=True)  # refuses any pickled object
    assert json.loads(checkpoint["config"])["model"] == "SASRec"
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp-" in f]

    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(path)
    trained = result["trainer"].model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    # the restored model reproduces the test result
    from recbole_diffusion.utils import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert trainer.evaluate(test_data, load_best_model=False) == result["test_result"]


def test_checkpoint_loads_from_another_folder_and_with_moved_data(tiny_data, in_tmp_dir, tmp_path, monkeypatch):
    """A run given a relative data folder stores it absolute, so the checkpoint loads from any
    working directory; ``data_path`` points it at data that moved; missing data is one error and
    writes no log file."""
    import shutil

    from recbole_diffusion.errors import DataError
    from recbole_diffusion.quick_start import load_data_and_model, run

    data_path, name = tiny_data
    work = tmp_path / "work"
    shutil.copytree(data_path, work / "data")
    monkeypatch.chdir(work)
    config = {**tiny_config(tiny_data, train_mode="sequence", epochs=1), "data_path": "data"}
    path = os.path.abspath(run(model="SASRec", config_dict=config, verbose=False)["saved_model_file"])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_data_and_model(path)[2].dataset_name == name
    shutil.move(str(work / "data"), str(tmp_path / "moved"))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    with pytest.raises(DataError, match="not found"):
        load_data_and_model(path)
    assert os.listdir(fresh) == []  # no log file for a load that did not start
    assert load_data_and_model(path, data_path=str(tmp_path / "moved"))[2].dataset_name == name


def test_resume_from_checkpoint_continues_training(tiny_data, in_tmp_dir):
    from recbole_diffusion.quick_start import build_model, run
    from recbole_diffusion.config import Config
    from recbole_diffusion.utils import create_dataset, data_preparation, get_trainer

    first = run(model="SASRec", config_dict=tiny_config(tiny_data, train_mode="sequence", epochs=1), verbose=False)
    config = Config(model="SASRec", config_dict=tiny_config(tiny_data, train_mode="sequence", epochs=2))
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, build_model(config, train_data))
    trainer.resume_checkpoint(first["saved_model_file"])
    assert trainer.start_epoch == 1
    trainer.fit(train_data, valid_data, saved=True)
    assert len(trainer.epoch_seconds) == 1  # only epoch 1 ran


class PickledPayload:
    """Stands for the pickled Config inside a checkpoint written by RecBole's own Trainer."""


def test_recbole_pickled_checkpoint_is_refused(tmp_path):
    from recbole_diffusion.compat import load_checkpoint

    path = tmp_path / "recbole.pth"
    torch.save({"config": PickledPayload(), "state_dict": {}}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(str(path))


# ----------------------------------------------------------------------------- tuning
def test_hypertuning_two_point_grid(tiny_data, in_tmp_dir, tmp_path):
    from recbole.trainer import HyperTuning

    from recbole_diffusion.quick_start import objective_function

    params = tmp_path / "grid.hyper"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    fixed = tmp_path / "fixed.yaml"
    cfg = tiny_config(tiny_data, model="SASRec", train_mode="sequence")
    import yaml

    fixed.write_text(yaml.safe_dump(cfg))
    tuner = HyperTuning(objective_function, algo="exhaustive", params_file=str(params), fixed_config_file_list=[str(fixed)])
    tuner.run()
    assert len(tuner.params2result) == 2
    assert tuner.best_params["learning_rate"] in (0.01, 0.001)
    # each trial tested its best checkpoint and then deleted it: a search leaves no file per trial
    saved = os.path.join(cfg.get("checkpoint_dir", "saved"))
    assert not os.path.isdir(saved) or not [f for f in os.listdir(saved) if f.endswith(".pth")]
    for algo in ("random", "bayes"):
        tuner = HyperTuning(objective_function, algo=algo, max_evals=1, params_file=str(params), fixed_config_file_list=[str(fixed)])
        tuner.run()
        assert len(tuner.params2result) == 1


def test_no_ray_import(tiny_data, tmp_path):
    probe = "import sys, recbole_diffusion.quick_start, recbole.trainer; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


@pytest.mark.parametrize("user_choice", [None, True])
def test_recbole_sine_does_not_leave_anomaly_mode_on(tmp_path, user_choice):
    """RecBole's sine.py switches autograd's anomaly mode on at import (a NaN check on every
    gradient); after importing the plugin and RecBole's models it is as the user set it."""
    before = "" if user_choice is None else f"torch.autograd.set_detect_anomaly({user_choice}); "
    probe = (
        f"import torch; {before}import recbole_diffusion; "
        "from recbole.model.sequential_recommender import SASRec, SINE; "
        "from recbole_diffusion.utils import get_model; get_model('SASRec'); print(torch.is_anomaly_enabled())"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == str(bool(user_choice)), out.stderr[-2000:]


def test_runner_reports_an_incompatible_stack_in_one_paragraph(tmp_path):
    """The version check runs when the package is imported, before the CLI's own error handling."""
    probe = (
        "import pandas, runpy, sys; pandas.__version__ = '3.0.0'; sys.argv = ['run_recbole_diff.py']; "
        f"runpy.run_path({os.path.join(REPO, 'run_recbole_diff.py')!r}, run_name='__main__')"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("error: pandas 3.0.0 is installed") and "Traceback" not in out.stderr


def test_recboles_loader_names_ours_for_a_plugin_checkpoint(tiny_data, in_tmp_dir):
    """RecBole's load_data_and_model, given one of our checkpoints, says to use ours (it would die
    on the JSON config with a bare TypeError)."""
    from recbole_diffusion.quick_start import run

    path = run(model="SASRec", config_dict=tiny_config(tiny_data, train_mode="sequence", epochs=1), verbose=False)["saved_model_file"]
    probe = (
        "import recbole_diffusion\n"
        "from recbole.quick_start import load_data_and_model\n"
        f"load_data_and_model({os.path.abspath(path)!r})\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "is a recbole-diffusion checkpoint: open it with recbole_diffusion.quick_start.load_data_and_model" in out.stderr
