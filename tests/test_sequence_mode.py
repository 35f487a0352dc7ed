"""train_mode: sequence -- same targets as RecBole's prefix samples, same loss, less work."""

import numpy as np
import pytest
import torch

from conftest import tiny_config


def build(tiny_data, model="SASRec", **overrides):
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = Config(model=model, config_dict=tiny_config(tiny_data, **overrides))
    train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
    return config, build_model(config, train_data), train_data, valid_data, test_data


def prefix_targets(train_data):
    feat = train_data._dataset.inter_feat
    return sorted(zip(feat["user_id"].tolist(), feat["item_id"].tolist()))


def sequence_targets(loader):
    pairs = []
    for batch in loader:
        users = batch["user_id"].tolist()
        for row, user in enumerate(users):
            pairs += [(user, t) for t in batch["target_item_id_list"][row].tolist() if t > 0]
    return sorted(pairs)


@pytest.mark.parametrize("max_len", [20, 5])
def test_sequence_batches_hold_exactly_the_train_targets(tiny_data, max_len):
    """Each train target of RecBole's leave-one-out split once per epoch, nothing else."""
    config, _, prefix_train, valid_data, test_data = build(tiny_data, MAX_ITEM_LIST_LENGTH=max_len)
    _, _, seq_train, _, _ = build(tiny_data, MAX_ITEM_LIST_LENGTH=max_len, train_mode="sequence")
    expected = prefix_targets(prefix_train)
    assert sequence_targets(seq_train) == expected
    assert sequence_targets(seq_train) == expected  # and again the next epoch
    held_out = set(zip(valid_data._dataset.inter_feat["user_id"].tolist(), valid_data._dataset.inter_feat["item_id"].tolist()))
    held_out |= set(zip(test_data._dataset.inter_feat["user_id"].tolist(), test_data._dataset.inter_feat["item_id"].tolist()))
    # valid/test positions are each user's last two; their (user, item) pairs may repeat earlier,
    # so compare counts: sequence targets per user == prefix targets per user
    seq_counts = np.bincount([u for u, _ in sequence_targets(seq_train)])
    pre_counts = np.bincount([u for u, _ in expected])
    assert np.array_equal(seq_counts, pre_counts) and held_out


def test_batches_are_trimmed_and_respect_the_target_budget(tiny_data):
    _, _, loader, _, _ = build(tiny_data, train_mode="sequence", train_batch_size=64)
    for batch in loader:
        lengths = batch["item_length"]
        assert batch["item_id_list"].shape[1] == int(lengths.max())  # no padding column beyond the longest
        assert int(lengths.sum()) <= 64 or len(lengths) == 1
        targets = batch["target_item_id_list"]
        assert torch.equal((targets > 0).sum(1), lengths)


def test_shift_inputs_targets(tiny_data):
    _, _, loader, _, _ = build(tiny_data, train_mode="sequence")
    batch = next(iter(loader))
    for row in range(len(batch["item_length"])):
        n = int(batch["item_length"][row])
        seq = batch["item_id_list"][row, :n]
        tgt = batch["target_item_id_list"][row, :n]
        assert torch.equal(seq[1:], tgt[:-1])


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_sequence_loss_equals_prefix_loss_over_the_same_targets(tiny_data, model):
    """The fast path computes the same loss as RecBole's prefix samples (dropout off)."""
    from recbole.data.interaction import Interaction

    from recbole_diffusion.layers import valid_positions

    overrides = dict(hidden_dropout_prob=0.0, attn_dropout_prob=0.0, dropout_prob=0.0, train_mode="sequence")
    config, seq_model, loader, _, _ = build(tiny_data, model=model, **overrides)
    seq_model.eval()  # dropout off
    batch = next(iter(loader))
    seq_loss = seq_model.calculate_loss(batch)

    # the same targets as RecBole prefix samples: history = inputs up to j, target = item at j+1
    seqs, lens, tgts = [], [], []
    max_len = config["MAX_ITEM_LIST_LENGTH"]
    for row in range(len(batch["item_length"])):
        n = int(batch["item_length"][row])
        for j in range(n):
            history = batch["item_id_list"][row, : j + 1]
            padded = torch.zeros(max_len, dtype=torch.long)
            padded[: j + 1] = history
            seqs.append(padded)
            lens.append(j + 1)
            tgts.append(int(batch["target_item_id_list"][row, j]))
    prefix = Interaction({
        "item_id_list": torch.stack(seqs),
        "item_length": torch.tensor(lens),
        "item_id": torch.tensor(tgts),
    })
    prefix_loss = super(type(seq_model), seq_model).calculate_loss(prefix)  # RecBole's own code
    assert int(valid_positions(batch["target_item_id_list"]).sum()) == len(tgts)
    assert torch.allclose(seq_loss, prefix_loss, atol=1e-5), (seq_loss.item(), prefix_loss.item())
    # summed over targets, too
    assert torch.allclose(seq_loss * len(tgts), prefix_loss * len(tgts), rtol=1e-5)


def test_sequence_mode_refuses_negative_sampling(tiny_data):
    from recbole_diffusion.utils import ConfigError

    with pytest.raises(ConfigError, match="train_neg_sample_args"):
        build(tiny_data, train_mode="sequence", train_neg_sample_args={"distribution": "uniform", "sample_num": 1}, loss_type="BPR")


def test_builtin_without_adapter_is_refused_in_sequence_mode(tiny_data):
    from recbole_diffusion.utils import ConfigError

    with pytest.raises(ConfigError, match="train_mode=prefix"):
        build(tiny_data, model="NARM", train_mode="sequence")


@pytest.mark.parametrize("rows", [1, 64, 200])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chunked_full_softmax_ce_equals_cross_entropy(rows, with_bias, reduction):
    import torch.nn.functional as F

    from recbole_diffusion.layers import full_softmax_ce

    gen = torch.Generator().manual_seed(rows)
    hidden = torch.randn(rows, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(300, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(300, generator=gen, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(1, 300, (rows,), generator=gen)
    upstream = torch.tensor(1.7, dtype=torch.float64)

    def grads(loss):
        inputs = [hidden, weight] + ([bias] if with_bias else [])
        return torch.autograd.grad(loss * upstream, inputs)

    logits = hidden @ weight.t() + (bias if with_bias else 0)
    expected = F.cross_entropy(logits, targets, reduction=reduction)
    got = full_softmax_ce(hidden, weight, targets, bias, reduction=reduction)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)
    for g_got, g_expected in zip(grads(full_softmax_ce(hidden, weight, targets, bias, reduction=reduction)), grads(expected)):
        assert torch.allclose(g_got, g_expected, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # no gradient wanted: the loss alone
        assert torch.allclose(full_softmax_ce(hidden, weight, targets, bias, reduction=reduction), expected, rtol=1e-10)
