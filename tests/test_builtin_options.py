"""RecBole's built-ins get the same checks of their sizes, head counts and dropout probabilities as
this plugin's models: one ``error:`` line, exit code 2, and no file written (no log, no checkpoint)."""

import os

import pytest

from recbole_diffusion import cli


@pytest.mark.parametrize("model, options, message", [
    ("SASRec", ["--hidden_size=0"], "hidden_size: must be an integer >= 1; got 0"),
    ("SASRec", ["--n_heads=3", "--hidden_size=64"], "n_heads: must divide hidden_size (64); got 3"),
    ("BERT4Rec", ["--attn_dropout_prob=1.0"], "attn_dropout_prob: must be a number in [0.0, 1.0); got 1.0"),
    ("GRU4Rec", ["--embedding_size=-4"], "embedding_size: must be an integer >= 1; got -4"),
    ("GRU4Rec", ["--dropout_prob=1.5"], "dropout_prob: must be a number in [0.0, 1.0); got 1.5"),
])
def test_impossible_builtin_option_is_one_error_and_writes_nothing(tmp_path, monkeypatch, capsys, model, options, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main([f"--model={model}", "--dataset=ml-100k", *options]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}"
    assert os.listdir(tmp_path) == []


def test_a_possible_builtin_option_is_accepted(tiny_data):
    from recbole_diffusion.config import Config

    data_path, name = tiny_data
    config = Config(model="SASRec", dataset=name, config_dict={"data_path": data_path, "n_heads": 4, "hidden_size": 64})
    assert config["n_heads"] == 4


def test_a_builtin_is_checked_only_on_the_options_it_has():
    """A built-in with heads and a width but no n_layers is not asked for one."""
    from types import SimpleNamespace

    from recbole_diffusion.config import check_builtin_options
    from recbole_diffusion.errors import ConfigError

    check_builtin_options(SimpleNamespace(final_config_dict={"n_heads": 2, "hidden_size": 64}))
    with pytest.raises(ConfigError, match=r"n_heads: must divide hidden_size \(64\); got 3"):
        check_builtin_options(SimpleNamespace(final_config_dict={"n_heads": 3, "hidden_size": 64}))
