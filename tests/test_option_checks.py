"""errors.OptionChecks: the typed option checks the models' check_config use."""

from types import SimpleNamespace

import pytest

from recbole_diffusion.errors import ConfigError, OptionChecks


def checks(**options):
    return OptionChecks(SimpleNamespace(final_config_dict=options))


def refusal(check, *args, **kwargs):
    with pytest.raises(ConfigError) as info:
        check(*args, **kwargs)
    return str(info.value)


def test_integer_lower_bound_only_by_default():
    c = checks(n=10**9, zero=0, flag=True, real=2.0)
    assert c.integer("n", 1) == 10**9
    assert refusal(c.integer, "zero", 1) == "zero: must be an integer >= 1; got 0"
    assert refusal(c.integer, "flag", 0).startswith("flag: must be an integer >= 0")
    assert refusal(c.integer, "real", 1).startswith("real: must be an integer >= 1")


@pytest.mark.parametrize("value, ok", [(1, True), (20, True), (0, False), (21, False), (True, False), ("5", False)])
def test_integer_with_maximum_is_a_closed_range(value, ok):
    c = checks(s=value)
    if ok:
        assert c.integer("s", 1, 20) == value
    else:
        assert refusal(c.integer, "s", 1, maximum=20) == f"s: must be an integer in [1, 20]; got {value!r}"


def test_number_bounds_open_and_closed():
    c = checks(p=1.0, q=0.0, inf=float("inf"))
    assert c.number("p", 0.0, 1.0) == 1.0
    assert refusal(c.number, "p", 0.0, 1.0, high_open=True) == "p: must be a number in [0.0, 1.0); got 1.0"
    assert refusal(c.number, "q", 0.0, low_open=True) == "q: must be a number in (0.0, inf]; got 0.0"
    assert refusal(c.number, "inf", 0.0).startswith("inf: must be a number")


def test_note_says_what_the_option_is_after_the_allowed_values():
    c = checks(n=0, p=2.0, kind="x")
    assert refusal(c.integer, "n", 1, note="steps T") == "n: must be an integer >= 1 (steps T); got 0"
    assert refusal(c.number, "p", 0.0, 1.0, note="paper: 0.1") == "p: must be a number in [0.0, 1.0] (paper: 0.1); got 2.0"
    assert refusal(c.choice, "kind", ("a", "b"), note="a: one; b: two") == "kind: must be one of a, b (a: one; b: two); got 'x'"


def test_transformer_shape_checks_every_head_count_and_dropout():
    shape = {"n_layers": 2, "hidden_size": 64, "inner_size": 256, "n_heads": 2, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.0}
    checks(**shape).transformer()
    assert refusal(checks(**{**shape, "n_heads": 3}).transformer) == "n_heads: must divide hidden_size (64); got 3"
    assert refusal(checks(**shape, extra_heads=5).transformer, heads=("n_heads", "extra_heads")).startswith("extra_heads: must divide")
    assert refusal(checks(**{**shape, "attn_dropout_prob": 1.0}).transformer).startswith("attn_dropout_prob: must be a number in [0.0, 1.0)")
    assert refusal(checks(**{**shape, "n_layers": 0}).transformer).startswith("n_layers: must be an integer >= 1")
    checks(**{**shape, "inner_size": None}).transformer()  # inner_size is optional


def test_no_negative_sampling_names_the_reason():
    checks(train_neg_sample_args=None).no_negative_sampling("x")
    checks(train_neg_sample_args={"distribution": "none"}).no_negative_sampling("x")
    message = refusal(checks(train_neg_sample_args={"distribution": "uniform", "sample_num": 1}).no_negative_sampling, "the loss is a full softmax")
    assert message == "train_neg_sample_args: the loss is a full softmax; set it to None (~)"
