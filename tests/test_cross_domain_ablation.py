"""benchmarks/cross_domain_ablation.py: a cross-domain checkpoint evaluated with each domain's history removed."""

import os

import pytest
import torch

from conftest import run_benchmark_script, train_saved
from test_cross_domain import cd_config, write_two_domain_dataset
from test_i2vae import FAST

from benchmarks import cross_domain_ablation


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny i2VAE trained two epochs on a two-domain dataset, saved, and its test result."""
    folder = tmp_path_factory.mktemp("i2vae")
    return train_saved("i2VAE", write_two_domain_dataset(folder), folder, make_config=cd_config, **FAST, epochs=2)


def table(stdout):
    """{'cloth, cold-start': (users, [HR × 3 inputs], [NDCG × 3 inputs])} from the printed table."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| domain"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            values = [float(v) for v in cells[2:]]
            rows[cells[0]] = (int(cells[1]), values[:3], values[3:])
    return rows


def test_without_history_empties_one_side_and_leaves_the_input_alone():
    from recbole.data.interaction import Interaction

    from recbole_diffusion.data.cross_domain import TARGET_DOMAIN

    fields = [("x_item_id_list", "x_item_length"), ("y_item_id_list", "y_item_length")]
    original = Interaction({
        TARGET_DOMAIN: torch.tensor([0, 1]),
        "x_item_id_list": torch.tensor([[1, 2], [3, 0]]), "x_item_length": torch.tensor([2, 1]),
        "y_item_id_list": torch.tensor([[7, 0], [8, 9]]), "y_item_length": torch.tensor([1, 2]),
    })
    other_removed = cross_domain_ablation.without_history(original, fields, drop_other=True)
    assert other_removed["x_item_id_list"].tolist() == [[1, 2], [0, 0]]  # row 1 targets y: its x history goes
    assert other_removed["y_item_id_list"].tolist() == [[0, 0], [8, 9]]
    assert other_removed["x_item_length"].tolist() == [2, 0] and other_removed["y_item_length"].tolist() == [0, 2]
    target_removed = cross_domain_ablation.without_history(original, fields, drop_other=False)
    assert target_removed["x_item_id_list"].tolist() == [[0, 0], [3, 0]]
    assert target_removed["y_item_id_list"].tolist() == [[7, 0], [0, 0]]
    assert original["x_item_id_list"].tolist() == [[1, 2], [3, 0]] and original["y_item_length"].tolist() == [1, 2]


def test_both_domains_reproduces_the_test_result_and_cold_start_ignores_the_target_side(trained, tmp_path):
    done = run_benchmark_script("cross_domain_ablation.py", tmp_path, f"--checkpoint={trained['saved_model_file']}")
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    test = dict(trained["test_result"])
    assert set(rows) == {f"{d}, {g}" for d in ("cloth", "sport") for g in ("all", "cold-start", "long-tailed")}
    for key, (users, hits, ndcg) in rows.items():
        domain, group = key.split(", ")
        assert users == test[f"users ({domain}, {group})"]
        # "both domains" is the checkpoint as trained: the run's own test result
        assert hits[0] == pytest.approx(test[f"hit@10 ({domain}, {group})"], abs=1e-4)
        assert ndcg[0] == pytest.approx(test[f"ndcg@10 ({domain}, {group})"], abs=1e-4)
        if group == "cold-start":  # no target-domain history to remove
            assert hits[2] == hits[0] and ndcg[2] == ndcg[0]
    assert os.listdir(tmp_path) == []  # writes nothing


def test_refuses_a_single_domain_checkpoint(tiny_data, tmp_path_factory, tmp_path):
    saved = train_saved("SASRec", tiny_data, tmp_path_factory.mktemp("sasrec"), epochs=1)["saved_model_file"]
    done = run_benchmark_script("cross_domain_ablation.py", tmp_path, f"--checkpoint={saved}")
    assert done.returncode == 2
    assert "has no domain_field" in done.stderr and saved in done.stderr
    missing = run_benchmark_script("cross_domain_ablation.py", tmp_path, f"--checkpoint={tmp_path / 'none.pth'}")
    assert missing.returncode == 2 and missing.stderr.startswith("error: --checkpoint ")


def test_the_model_receives_each_input(trained, tmp_path, monkeypatch):
    """Run in-process with a spy on i2VAE.full_sort_predict: the three evaluations hand the model the
    samples as they are, without the other domain's history, without the target domain's."""
    import argparse

    from recbole_diffusion.data.cross_domain import TARGET_DOMAIN
    from recbole_diffusion.model.sequential_recommender.i2vae import i2VAE

    seen, original = [], i2VAE.full_sort_predict

    def spy(self, interaction):
        target = interaction[TARGET_DOMAIN]
        lengths = torch.stack([interaction[self.DOMAIN_LEN[d]] for d in range(2)], dim=1)
        rows = torch.arange(len(target))
        seen.append((lengths[rows, target], lengths[rows, 1 - target]))  # (target side, other side)
        return original(self, interaction)

    monkeypatch.setattr(i2VAE, "full_sort_predict", spy)
    monkeypatch.chdir(tmp_path)
    cross_domain_ablation.evaluate(argparse.Namespace(checkpoint=trained["saved_model_file"], data_path=None, split="test"))
    assert len(seen) % 3 == 0
    n = len(seen) // 3
    own, other = (torch.cat([s[i] for s in seen[:n]]) for i in range(2))
    assert (own > 0).any() and (other > 0).any()
    own_1, other_1 = (torch.cat([s[i] for s in seen[n:2 * n]]) for i in range(2))
    assert torch.equal(own_1, own) and (other_1 == 0).all()  # target domain only
    own_2, other_2 = (torch.cat([s[i] for s in seen[2 * n:]]) for i in range(2))
    assert (own_2 == 0).all() and torch.equal(other_2, other)  # other domain only
    assert os.listdir(tmp_path) == []
