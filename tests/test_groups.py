"""Sparse-user metrics (option ``sparse_users``): the right users, RecBole's metrics on them."""

import math
import os

import pytest
import torch

from conftest import tiny_config, write_tiny_dataset


MIXED_COUNTS = {}


@pytest.fixture(scope="module")
def mixed_lengths(tmp_path_factory):
    """A tiny real dataset whose users have 5, 7 or 20-30 interactions (by user id mod 3);
    returns ``(data_path, name)`` and writes ``counts`` (raw user id -> interactions) on it."""
    data_path, name = write_tiny_dataset(tmp_path_factory.mktemp("mixed"), name="mixed")
    path = os.path.join(data_path, name, f"{name}.inter")
    with open(path, encoding="utf-8") as handle:
        header, *lines = handle.read().splitlines()
    by_user = {}
    for line in lines:
        by_user.setdefault(int(line.split("\t")[0]), []).append(line)
    keep = {0: 5, 1: 7, 2: 30}
    counts = {}
    with open(path, "w", encoding="utf-8") as out:
        out.write(header + "\n")
        for uid, rows in by_user.items():
            rows = rows[-keep[uid % 3]:]
            counts[uid] = len(rows)
            out.write("\n".join(rows) + "\n")
    MIXED_COUNTS.update(counts)
    return data_path, name


def _setup(data, device="cpu", **overrides):
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation, get_trainer

    config = Config(model="SASRec", config_dict=tiny_config(data, device=device, train_mode="sequence", **overrides))
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = build_model(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    return config, dataset, trainer, train_data, valid_data, test_data


def test_history_length_counts_training_interactions(mixed_lengths, in_tmp_dir):
    config, dataset, _, _, valid_data, test_data = _setup(mixed_lengths, sparse_users=[3, 5])
    history = test_data.train_history_length
    assert valid_data.train_history_length is history
    for inner in range(1, dataset.user_num):
        raw = int(dataset.id2token(dataset.uid_field, inner))
        # leave-one-out: all but the last two interactions are training interactions
        assert int(history[inner]) == MIXED_COUNTS[raw] - 2


def test_group_metrics_are_metrics_of_the_group(mixed_lengths, in_tmp_dir, device):
    """Recomputed by hand from the model's scores: HR and NDCG of the users in each group."""
    config, dataset, trainer, train_data, valid_data, test_data = _setup(mixed_lengths, device=device, sparse_users=[3, 5])
    trainer.fit(train_data, valid_data, saved=False)
    result = trainer.evaluate(test_data, load_best_model=False)

    model = trainer.model.eval()
    ranks, users = [], []
    with torch.no_grad():
        for interaction, history_index, positive_u, positive_i in test_data:
            scores = model.full_sort_predict(interaction.to(trainer.device)).view(len(interaction), -1).cpu()
            scores[:, 0] = -math.inf
            if history_index is not None:
                scores[history_index] = -math.inf
            target = scores[positive_u, positive_i]
            ranks.append((scores[positive_u] > target[:, None]).sum(1))
            users.append(interaction["user_id"][positive_u])
    ranks, users = torch.cat(ranks), torch.cat(users)
    history = test_data.train_history_length[users]
    for threshold, expected_users in ((3, 27), (5, 54)):  # 80 users: ids 1..80 -> 26/27/27 by mod 3
        rows = history <= threshold
        assert result[f"users (history<={threshold})"] == int(rows.sum())
        assert int(rows.sum()) in (expected_users - 1, expected_users)
        group_ranks = ranks[rows]
        for k in (5, 10, 20):
            hit = (group_ranks < k).float().mean().item()
            ndcg = torch.where(group_ranks < k, 1 / torch.log2(group_ranks.float() + 2), torch.zeros(())).mean().item()
            assert result[f"hit@{k} (history<={threshold})"] == pytest.approx(hit, abs=1e-4)
            assert result[f"ndcg@{k} (history<={threshold})"] == pytest.approx(ndcg, abs=1e-4)
    # the all-user metrics are untouched by the option
    assert result["hit@10"] == pytest.approx((ranks < 10).float().mean().item(), abs=1e-4)


def test_group_covering_everyone_equals_all_users(mixed_lengths, in_tmp_dir):
    config, dataset, trainer, train_data, valid_data, test_data = _setup(mixed_lengths, sparse_users=[1000])
    result = trainer.evaluate(test_data, load_best_model=False)
    assert result["users (history<=1000)"] == dataset.user_num - 1
    for key in ("hit@10", "ndcg@10", "ndcg@20"):
        assert result[f"{key} (history<=1000)"] == result[key]


def test_off_by_default(mixed_lengths, in_tmp_dir):
    _, _, trainer, _, _, test_data = _setup(mixed_lengths)
    assert not any("history" in key for key in trainer.evaluate(test_data, load_best_model=False))


@pytest.mark.parametrize("value", [[0], ["3"], [2.5], "five"])
def test_bad_thresholds_are_refused_at_start(mixed_lengths, in_tmp_dir, value):
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match="sparse_users"):
        _setup(mixed_lengths, sparse_users=value)


def test_a_value_based_evaluation_has_no_ranks():
    """RecBole's CTR models (NFM, DCN, ...) are evaluated on scores and labels, without positive
    items: the collector keeps no ranks for them instead of failing."""
    import torch

    from recbole_diffusion.evaluation import target_ranks

    assert target_ranks(torch.rand(6), None, None, 10) is None
