"""The command line: --help names the models and the common options; a broken YAML is one line that
names the file, the line and the column, and nothing is written."""

import os

import pytest

from recbole_diffusion import cli
from recbole_diffusion.utils import plugin_model_names


def test_help_lists_the_models_and_common_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in plugin_model_names():
        assert name in text
    for option in ("--epochs=N", "--train_mode=sequence", "--checkpoint_dir=DIR", "SASRec"):
        assert option in text


@pytest.mark.parametrize("content, message", [
    ("epochs: 3\nlearning_rate: [0.1\n", "bad.yaml: line 3, column 1: YAML syntax error: expected ',' or ']'"),
    ("epochs: 3\n  learning_rate: 0.1\n", "bad.yaml: line 2, column 16: YAML syntax error: mapping values are not allowed here"),
    ("- epochs\n- 3\n", "bad.yaml: a config file holds `key: value` lines; this one holds a list"),
])
def test_a_broken_yaml_is_one_line_naming_file_and_line(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(content)
    assert cli.main(["--model=SASRec", "--dataset=ml-100k", "--config_files=bad.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err, err
    assert os.listdir(tmp_path) == ["bad.yaml"]
