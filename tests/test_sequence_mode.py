"""train_mode: sequence -- same targets as RecBole's prefix samples, same loss, less work."""

import numpy as np
import pytest
import torch

from conftest import DEVICES, tiny_config


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
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match="train_neg_sample_args"):
        build(tiny_data, train_mode="sequence", train_neg_sample_args={"distribution": "uniform", "sample_num": 1}, loss_type="BPR")


def test_builtin_without_adapter_is_refused_in_sequence_mode(tiny_data):
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match="train_mode=prefix"):
        build(tiny_data, model="NARM", train_mode="sequence")


# ------------------------------------------------------------------------ BERT4Rec (masked items)
BERT4REC = dict(model="BERT4Rec", train_mode="sequence", hidden_dropout_prob=0.0, attn_dropout_prob=0.0)


def bert4rec_windows(batch, max_len):
    """Each row's training window as RecBole's BERT4Rec takes an item list, built here from the
    batch by hand: the first input, then the targets; its last ``max_len`` items (BERT4Rec has
    ``max_len`` positions); left-aligned and padded to ``max_len`` as RecBole's samples."""
    rows = []
    for row in range(len(batch["item_length"])):
        n = int(batch["item_length"][row])
        window = [int(batch["item_id_list"][row, 0])] + batch["target_item_id_list"][row, :n].tolist()
        rows.append(window[-max_len:])
    item_seq = torch.zeros(len(rows), max_len, dtype=torch.long)
    for row, items in enumerate(rows):
        item_seq[row, : len(items)] = torch.tensor(items)
    return item_seq, torch.tensor([len(items) for items in rows])


@pytest.mark.parametrize("masking", ["items", "last"])
def test_bert4rec_sequence_loss_equals_recboles_on_the_same_masks(tiny_data, monkeypatch, masking):
    """On the same windows and the same masked positions, the adapter's loss is RecBole's
    ``BERT4Rec.calculate_loss`` on the fields RecBole's own ``MaskItemSequence`` transform makes.

    ``items``: a fixed mask is handed to the adapter (its ``draw_mask``) and to RecBole's
    transform (its ``random.random()`` draws: 0.0 = mask, 1.0 = keep); it masks position 0 in
    one row, every item in another (more than the ``mask_item_length`` RecBole scores) and
    nothing in a third. ``last``: ``ft_ratio`` 1 on both sides, so both mask each row's last item.
    """
    import random

    from recbole.data.interaction import Interaction
    from recbole.data.transform import MaskItemSequence
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    config, model, loader, _, _ = build(tiny_data, MAX_ITEM_LIST_LENGTH=10, **BERT4REC)
    model.eval()
    transform = MaskItemSequence(config)
    assert model.mask_item_length == transform.mask_item_length == 2
    # batches hold windows of one length: mix full windows (10 targets, one item dropped) and shorter ones
    full, short = np.flatnonzero(loader.win_lengths == 10), np.flatnonzero(loader.win_lengths < 10)
    batch = loader.collate_fn(np.r_[full[:12], short[:12]])
    item_seq, lengths = bert4rec_windows(batch, config["MAX_ITEM_LIST_LENGTH"])
    assert int(lengths.max()) == 10 and int(lengths.min()) < 10
    valid = torch.arange(10) < lengths.unsqueeze(1)

    if masking == "items":
        mask = (torch.rand(item_seq.shape, generator=torch.Generator().manual_seed(3)) < 0.4) & valid
        mask[0, 0], mask[1], mask[2] = True, valid[1], False
        draws = iter([1.0] + [0.0 if mask[r, c] else 1.0 for r in range(len(mask)) for c in range(int(lengths[r]))])
        monkeypatch.setattr(random, "random", lambda: next(draws))  # RecBole's transform draws with random.random()

        def fixed_mask(seq, seq_lengths):
            assert torch.equal(seq, item_seq[:, : seq.size(1)]) and torch.equal(seq_lengths, lengths)
            return mask[:, : seq.size(1)]

        monkeypatch.setattr(model, "draw_mask", fixed_mask)
    else:
        model.ft_ratio = transform.ft_ratio = 1.0
        mask = torch.arange(10) == (lengths - 1).unsqueeze(1)

    recbole = transform(loader._dataset, Interaction({"item_id_list": item_seq.clone(), "item_length": lengths}))
    assert masking == "last" or next(draws, None) is None  # as many draws as masking decisions
    ours = model.recbole_mask_fields(item_seq, mask)
    for field in ("Mask_item_id_list", "Pos_item_id", "MASK_INDEX"):
        assert torch.equal(ours[field], recbole[field]), field
    assert int((recbole["MASK_INDEX"] > 0).sum()) > len(lengths) // 2  # plenty of scored positions

    with torch.no_grad():
        expected = BERT4Rec.calculate_loss(model, recbole)  # RecBole's own code, RecBole's fields
        got = model.calculate_loss(batch)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0), (got.item(), expected.item())


def test_bert4rec_trains_and_evaluates_in_sequence_mode(tiny_data, in_tmp_dir, monkeypatch):
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    from recbole_diffusion.utils import get_trainer

    config, model, train_data, valid_data, test_data = build(tiny_data, model="BERT4Rec", train_mode="sequence")
    assert isinstance(model, BERT4Rec) and type(model).__name__ == "BERT4Rec"
    reference = BERT4Rec(config, train_data._dataset)  # same parameters, same state dict
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    losses, calculate_loss = [], model.calculate_loss
    monkeypatch.setattr(model, "calculate_loss", lambda batch: losses.append(calculate_loss(batch)) or losses[-1])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.fit(train_data, valid_data, saved=False, verbose=False)
    assert len(losses) == len(train_data) and all(bool(torch.isfinite(loss)) and loss > 0 for loss in losses)
    result = trainer.evaluate(test_data, load_best_model=False)
    assert {"hit@10", "ndcg@10"} <= set(result) and all(0.0 <= v <= 1.0 for v in result.values())


def test_bert4rec_sequence_mode_is_opt_in_and_takes_only_ce(tiny_data):
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    from recbole_diffusion.config import Config
    from recbole_diffusion.errors import ConfigError
    from recbole_diffusion.utils import get_sequence_model

    config = Config(model="BERT4Rec", config_dict=tiny_config(tiny_data))
    assert config["train_mode"] == "prefix" and get_sequence_model(config, BERT4Rec) is BERT4Rec
    with pytest.raises(ConfigError, match="loss_type=CE"):
        build(tiny_data, model="BERT4Rec", train_mode="sequence", loss_type="BPR", train_neg_sample_args=None)


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


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_full_softmax_ce_under_autocast_is_float32(device):
    """``enable_amp``: under autocast the hidden states arrive in half precision beside a float32 item
    table; the loss is computed in float32 (same value as without autocast) and its gradients reach both."""
    from recbole_diffusion.layers import full_softmax_ce

    gen = torch.Generator().manual_seed(3)
    layer = torch.nn.Linear(8, 8).to(device)
    weight = torch.randn(300, 8, generator=gen).to(device).requires_grad_()
    bias = torch.zeros(300, device=device, requires_grad=True)
    inputs, targets = torch.randn(50, 8, generator=gen).to(device), torch.randint(1, 300, (50,), generator=gen).to(device)
    low = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device, dtype=low):
        hidden = layer(inputs)
        assert hidden.dtype == low
        loss = full_softmax_ce(hidden, weight, targets, bias)
    loss.backward()
    assert loss.dtype == torch.float32 and weight.grad is not None and layer.weight.grad is not None
    expected = torch.nn.functional.cross_entropy(hidden.float() @ weight.t() + bias, targets)
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)
