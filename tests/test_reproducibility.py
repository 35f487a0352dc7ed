"""Seeded runs are reproducible on CPU: two runs of a model with the same seed give the same
metrics and the same weights; another seed gives other ones (so the check can fail). What is and is
not reproducible beyond this (thread counts, GPUs) is in the README."""

import pytest
import torch

from conftest import tiny_config
from test_cross_domain import cd_config, two_domain  # noqa: F401  (the two-domain dataset fixture)

CASES = [
    pytest.param("SASRec", {"train_mode": "sequence"}, id="SASRec"),
    pytest.param("BERT4Rec", {"train_mode": "sequence"}, id="BERT4Rec"),
    pytest.param("DiffRec", {}, id="DiffRec"),
    pytest.param("DreamRec", {"n_diffusion_steps": 20}, id="DreamRec"),
    pytest.param("ADARec", {}, id="ADARec"),
    pytest.param("AsarRec", {}, id="AsarRec"),
]


def seeded_run(config):
    from recbole_diffusion.quick_start import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run(config_dict=config, saved=False, verbose=False, return_trainer=True)
    finally:
        torch.set_num_threads(threads)
    weights = {k: v.clone() for k, v in result["trainer"].model.state_dict().items()}
    return result["test_result"], result["best_valid_result"], weights


def assert_same(first, second):
    assert first[0] == second[0] and first[1] == second[1]
    assert first[2].keys() == second[2].keys()
    for key in first[2]:
        assert torch.equal(first[2][key], second[2][key]), key


def assert_differs(first, other):
    assert any(not torch.equal(first[2][k], other[2][k]) for k in first[2] if first[2][k].is_floating_point())


@pytest.mark.parametrize("model, overrides", CASES)
def test_same_seed_same_run_other_seed_other_run(tiny_data, in_tmp_dir, model, overrides, device):
    config = tiny_config(tiny_data, device=device, model=model, epochs=2, eval_step=1, seed=3, **overrides)
    first = seeded_run(config)
    assert_same(first, seeded_run(config))
    assert_differs(first, seeded_run({**config, "seed": 4}))


def test_i2vae_same_seed_same_run_other_seed_other_run(two_domain, in_tmp_dir):  # noqa: F811
    fast = {"n_layers": 1, "n_cross_heads": 2, "n_pseudo_items": 4, "psg_epochs": 2, "psg_embedding_size": 8, "eval_step": 1, "seed": 3}
    config = {**cd_config(two_domain, "i2VAE", **fast), "model": "i2VAE"}
    first = seeded_run(config)
    assert_same(first, seeded_run(config))
    assert_differs(first, seeded_run({**config, "seed": 4}))
