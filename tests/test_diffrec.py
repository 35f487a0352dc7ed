"""DiffRec (Du et al. 2023): noising, importance sampling, two-stream training, inference, config."""

import io
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import assert_config_error, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(n_diffusion_steps=50, n_sample_draws=3)


def build(tiny_data, split=None, **overrides):
    """(config, model, train_data, valid_data) on the tiny dataset, dropout off by default.

    ``split`` reuses already built (train_data, valid_data) loaders: only Config and model are made.
    """
    from recbole.utils import init_seed

    from recbole_diffusion.config import Config
    from recbole_diffusion.utils import create_dataset, data_preparation, get_model

    values = dict(FAST, hidden_dropout_prob=0.0, attn_dropout_prob=0.0, n_heads=2)
    values.update(overrides)
    config = Config(model="DiffRec", config_dict=tiny_config(tiny_data, **values))
    init_seed(config["seed"], True)
    if split is None:
        train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    else:
        train_data, valid_data = split
    model = get_model("DiffRec")(config, train_data._dataset)
    return config, model, train_data, valid_data


@pytest.fixture(scope="module")
def split(tiny_data):
    """Sequence-mode train loader and the valid loader of the tiny dataset, built once."""
    _, _, train_data, valid_data = build(tiny_data)
    return train_data, valid_data


@pytest.fixture(scope="module")
def built(tiny_data, split):
    return build(tiny_data, split)


def first_batch(loader):
    return next(iter(loader))


# ----------------------------------------------------------------------------- noising
@pytest.mark.parametrize("noised_items", [1, 2])
def test_only_the_target_slot_changes_under_noising(tiny_data, split, noised_items):
    """Two noise draws change the encoder input at the slot (and the K - 1 items before it) only;
    the history tokens are exactly the clean embeddings + position + step, LayerNormed."""
    _, model, _, valid_data = build(tiny_data, split, noised_items=noised_items, train_mode="prefix")
    model.eval()
    batch = first_batch(valid_data)[0]
    history, slot = model._prefix_inputs(batch["item_id_list"], batch["item_length"])
    steps = torch.full((history.size(0),), 30)
    inputs = []
    handle = model.trm_encoder.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach()))
    for seed in (1, 2):
        torch.manual_seed(seed)
        x_slot = torch.randn(history.size(0), model.hidden_size)
        model.denoise_prefix(history, slot, x_slot, steps, history_noise=torch.randn(*history.shape, model.hidden_size))
    handle.remove()
    changed = (inputs[0] - inputs[1]).abs().amax(dim=-1) > 0  # [B, L]
    positions = torch.arange(history.size(1)).unsqueeze(0)
    expected = (positions <= slot.unsqueeze(1)) & (positions > (slot - noised_items).unsqueeze(1))
    assert torch.equal(changed, expected)
    clean = model.LayerNorm(
        model.item_embedding(history) + model.position_embedding.weight[: history.size(1)] + model.step_embedding_scale * model.step_embedding(steps).unsqueeze(1)
    )
    untouched = (positions < slot.unsqueeze(1)) & ~expected
    assert torch.allclose(inputs[0][untouched], clean[untouched], atol=1e-6)


def test_training_noises_only_the_target_embedding(built, monkeypatch):
    """In both training paths q_sample sees only E(target) items, never the history."""
    config, model, train_data, _ = built
    seen = []
    original = model.diffusion.q_sample

    def spy(x0, t, noise=None, generator=None):
        seen.append(x0.detach().clone())
        return original(x0, t, noise=noise, generator=generator)

    monkeypatch.setattr(model.diffusion, "q_sample", spy)
    batch = first_batch(train_data)
    model.train()
    model.calculate_loss(batch)
    targets = batch["target_item_id_list"]
    query_targets = targets[:, : model.max_seq_length - 1]
    assert torch.equal(seen[0], model.item_embedding(query_targets).detach())
    if len(seen) > 1:  # full windows: the last target, through the plain path
        full = targets[:, model.max_seq_length - 1] > 0
        assert torch.equal(seen[1], model.item_embedding(targets[full, model.max_seq_length - 1]).detach())
    assert len(seen) <= 2


# ----------------------------------------------------------------------------- two-stream == prefix
def expand_to_prefix(model, batch):
    """Every target of a sequence batch as a RecBole-style prefix sample (row, j, history, len, item)."""
    item_seq, targets = batch["item_id_list"], batch["target_item_id_list"]
    rows, cols = torch.nonzero(targets > 0, as_tuple=True)
    length = model.max_seq_length
    histories = torch.zeros(rows.numel(), length, dtype=torch.long)
    for k, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):
        history = item_seq[row, : col + 1][-length:]
        histories[k, : history.numel()] = history
    lengths = (cols + 1).clamp(max=length)
    return rows, cols, histories, lengths, targets[rows, cols]


def test_two_stream_output_equals_the_prefix_encoder(tiny_data, split):
    _, model, train_data, _ = build(tiny_data, split)
    model = model.double().eval()
    batch = next(b for b in train_data if b["item_id_list"].size(1) == model.max_seq_length)
    assert bool((batch["item_length"] == model.max_seq_length).any())  # full windows are covered
    item_seq = batch["item_id_list"]
    generator = torch.Generator().manual_seed(0)
    steps = torch.randint(0, model.n_diffusion_steps, (item_seq.size(0),), generator=generator)
    n_queries = model.max_seq_length - 1
    x_targets = torch.randn(item_seq.size(0), n_queries, model.hidden_size, generator=generator, dtype=torch.float64)
    output = model.denoise_sequence(item_seq, batch["item_length"], x_targets, steps)

    rows, cols, histories, lengths, _ = expand_to_prefix(model, batch)
    inner = cols < n_queries
    history, slot = model._prefix_inputs(histories[inner], lengths[inner])
    expected = model.denoise_prefix(history, slot, x_targets[rows[inner], cols[inner]], steps[rows[inner]])
    got = output[rows[inner], cols[inner]]
    assert torch.allclose(got, expected, atol=1e-10, rtol=0), (got - expected).abs().max()
    # slot positions: the history of the j-th target has j + 1 items, so its slot is j + 1
    assert torch.equal(slot, cols[inner] + 1)


def test_sequence_loss_equals_prefix_loss_on_the_same_targets(tiny_data, split, monkeypatch):
    """The whole sequence-mode loss (two-stream targets + full-window targets through the plain
    path) equals the prefix-mode loss on the equivalent prefix samples, step and noise held fixed."""
    _, model, train_data, _ = build(tiny_data, split, mse_loss_weight=0.7, rec_loss_weight=1.3)
    model = model.double().eval()
    batch = next(b for b in train_data if b["item_id_list"].size(1) == model.max_seq_length)
    batch_size = batch["item_id_list"].size(0)
    steps = torch.randint(0, model.n_diffusion_steps, (batch_size,))
    weights = torch.rand(batch_size, dtype=torch.float64) + 0.5
    # noise as a fixed function of the clean embedding: the same target gets the same noise in both paths
    monkeypatch.setattr(model, "_noise_like", lambda x: torch.sin(1000.0 * x + 1.0))
    monkeypatch.setattr(model.step_sampler, "sample", lambda n, device=None: (steps, weights))
    sequence_loss = model.calculate_loss(batch)

    from recbole.data.interaction import Interaction

    rows, _, histories, lengths, items = expand_to_prefix(model, batch)
    monkeypatch.setattr(model.step_sampler, "sample", lambda n, device=None: (steps[rows], weights[rows]))
    prefix_batch = Interaction({"item_id_list": histories, "item_length": lengths, "item_id": items})
    prefix_loss = model.calculate_loss(prefix_batch)
    assert torch.allclose(sequence_loss, prefix_loss, atol=1e-10, rtol=0), (sequence_loss, prefix_loss)


@pytest.mark.parametrize("readout", ["constant_slot", "last_position"])
def test_readouts_without_diffusion_train_as_prefix_samples_and_evaluate_deterministically(tiny_data, split, readout):
    """The ablation readouts: the sequence-mode loss is the cross-entropy of the prefix samples
    (no L_n, no step draw), and evaluation is one draw that no noise seed changes; at
    ``last_position`` the score of a history is SASRec's: the output at its last item."""
    _, model, train_data, valid_data = build(tiny_data, split, readout=readout, output_bias=False)
    model = model.double().eval()
    assert model.output_layer.bias is None
    batch = next(b for b in train_data if b["item_id_list"].size(1) == model.max_seq_length)
    drawn = []
    model.step_sampler.sample = lambda *a, **k: drawn.append(1)
    sequence_loss = model.calculate_loss(batch)

    from recbole.data.interaction import Interaction

    _, _, histories, lengths, items = expand_to_prefix(model, batch)
    prefix_loss = model.calculate_loss(Interaction({"item_id_list": histories, "item_length": lengths, "item_id": items}))
    assert torch.allclose(sequence_loss, prefix_loss, atol=1e-10, rtol=0), (sequence_loss, prefix_loss)
    assert not drawn  # no diffusion step is sampled

    interaction = first_batch(valid_data)[0]
    item_seq, item_len = interaction["item_id_list"], interaction["item_length"]
    generated = model.generate(item_seq, item_len, generator=torch.Generator().manual_seed(1))
    again = model.generate(item_seq, item_len, generator=torch.Generator().manual_seed(2))
    assert generated.shape == (item_seq.size(0), 1, model.hidden_size) and torch.equal(generated, again)
    if readout == "last_position":
        hidden = model.dropout(model.LayerNorm(model.item_embedding(item_seq) + model.position_embedding(
            torch.arange(item_seq.size(1)))))
        from recbole_diffusion.layers import causal_padding_mask

        output = model.trm_encoder(hidden, causal_padding_mask(item_seq).double(), output_all_encoded_layers=False)[-1]
        expected = output[torch.arange(item_seq.size(0)), item_len - 1]
        assert torch.allclose(generated[:, 0], expected, atol=1e-10, rtol=0)


def test_input_layer_norm_off_feeds_the_bare_sum_of_eq_14(tiny_data, split):
    _, model, _, _ = build(tiny_data, split, input_layer_norm=False, use_step_embedding=False)
    model.eval()
    tokens = torch.randn(2, 4, model.hidden_size)
    positions = torch.arange(4)
    assert torch.equal(model._embed(tokens, positions, None), tokens + model.position_embedding(positions))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_is_weighted_mse_plus_cross_entropy_and_records_one_value_per_sequence(tiny_data, split, reduction):
    import torch.nn.functional as F

    _, model, _, _ = build(tiny_data, split, mse_loss_weight=0.5, rec_loss_weight=2.0, mse_reduction=reduction)
    model.train()
    generator = torch.Generator().manual_seed(3)
    predicted = torch.randn(5, model.hidden_size, generator=generator)
    clean = torch.randn(5, model.hidden_size, generator=generator)
    items = torch.tensor([1, 2, 3, 4, 5])
    sequence_index = torch.tensor([0, 0, 1, 2, 2])
    steps = torch.tensor([7, 9, 7])
    weights = torch.tensor([0.5, 2.0, 4.0])
    loss = model._loss(predicted, clean, items, sequence_index, steps, weights)
    squared = ((predicted - clean) ** 2).sum(-1)  # ‖h_T^0 - f_θ‖², summed over features ...
    if reduction == "mean":
        squared = squared / model.hidden_size  # ... or its mean over them
    expected = 0.5 * (weights[sequence_index] * squared).mean() + 2.0 * F.cross_entropy(model.output_layer(predicted), items)
    assert torch.allclose(loss, expected, atol=1e-6)
    sampler = model.step_sampler
    assert sampler.loss_count[7].item() == 2 and sampler.loss_count[9].item() == 1
    recorded = sorted(sampler.loss_history[7, :2].tolist())
    per_sequence = sorted([squared[:2].mean().item(), squared[3:].mean().item()])
    assert recorded == pytest.approx(per_sequence, rel=1e-6)
    assert sampler.loss_history[9, 0].item() == pytest.approx(squared[2].item(), rel=1e-6)


def test_full_history_drops_the_oldest_item(built):
    _, model, _, _ = built
    length = model.max_seq_length
    item_seq = torch.arange(1, length + 1).unsqueeze(0).repeat(2, 1)
    item_seq[1, 5:] = 0
    history, slot = model._prefix_inputs(item_seq, torch.tensor([length, 5]))
    assert slot.tolist() == [length - 1, 5]
    assert history[0].tolist() == list(range(2, length + 1)) + [0]
    assert history[1, :5].tolist() == [1, 2, 3, 4, 5] and not history[1, 5:].any()


# ----------------------------------------------------------------------------- importance sampling
def test_sampler_is_uniform_until_every_step_has_a_full_history():
    from recbole_diffusion.diffusion import StepImportanceSampler

    sampler = StepImportanceSampler(4, history_size=3, uniform_prob=0.0)
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert torch.equal(sampler.probabilities(), uniform)
    sampler.record(torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]), torch.arange(1.0, 12.0))
    assert not sampler.history_full()
    assert torch.equal(sampler.probabilities(), uniform)
    steps, weights = sampler.sample(1000)
    assert torch.equal(weights, torch.ones(1000))
    sampler.record(torch.tensor([3]), torch.tensor([12.0]))
    assert sampler.history_full()
    assert not torch.equal(sampler.probabilities(), uniform)


def test_sampler_probabilities_follow_root_mean_square_of_the_history():
    from recbole_diffusion.diffusion import StepImportanceSampler

    history = {0: [1.0, 1.0], 1: [3.0, 4.0], 2: [0.0, 2.0], 3: [10.0, 0.5]}
    sampler = StepImportanceSampler(4, history_size=2, uniform_prob=0.0)
    for step, values in history.items():
        sampler.record(torch.tensor([step] * len(values)), torch.tensor(values))
    rms = torch.tensor([math.sqrt(sum(v * v for v in values) / 2) for values in history.values()], dtype=torch.float64)
    assert torch.allclose(sampler.probabilities(), rms / rms.sum(), atol=1e-12)

    mixed = StepImportanceSampler(4, history_size=2, uniform_prob=0.1)
    mixed.load_state_dict(sampler.state_dict())
    assert torch.allclose(mixed.probabilities(), 0.9 * rms / rms.sum() + 0.1 / 4, atol=1e-12)

    torch.manual_seed(0)
    steps, weights = sampler.sample(200_000)
    frequency = torch.bincount(steps, minlength=4).double() / steps.numel()
    assert torch.allclose(frequency, rms / rms.sum(), atol=0.005)
    expected_weights = 1.0 / (4 * (rms / rms.sum()))[steps]
    assert torch.allclose(weights.double(), expected_weights, rtol=1e-6)


def test_sampler_records_and_samples_on_the_model_device(device):
    """The history lives where the model does (buffers), and draws come back on that device."""
    from recbole_diffusion.diffusion import StepImportanceSampler

    sampler = StepImportanceSampler(4, history_size=2, uniform_prob=0.0).to(device)
    sampler.record(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3], device=device), torch.arange(1.0, 9.0, device=device))
    assert sampler.history_full() and sampler.loss_history.device.type == device
    steps, weights = sampler.sample(100, device=device)
    assert steps.device.type == device and weights.device.type == device
    assert not torch.equal(sampler.probabilities().cpu(), torch.full((4,), 0.25, dtype=torch.float64))


def test_sampler_keeps_only_the_latest_values_per_step():
    from recbole_diffusion.diffusion import StepImportanceSampler

    sampler = StepImportanceSampler(3, history_size=2, uniform_prob=0.0)
    sampler.record(torch.tensor([0, 1, 0, 0]), torch.tensor([1.0, 5.0, 2.0, 3.0]))  # step 0 overflows
    assert sorted(sampler.loss_history[0].tolist()) == [2.0, 3.0]
    assert sampler.loss_count.tolist() == [2, 1, 0]
    sampler.record(torch.tensor([0, 1]), torch.tensor([4.0, 6.0]))
    assert sorted(sampler.loss_history[0].tolist()) == [3.0, 4.0]  # the oldest (2.0) was replaced
    assert sorted(sampler.loss_history[1].tolist()) == [5.0, 6.0]


def test_loss_history_is_model_state_and_survives_save_and_load(tiny_data, split):
    _, model, train_data, _ = build(tiny_data, split)
    model.train()
    for batch in train_data:
        model.calculate_loss(batch)
    sampler = model.step_sampler
    assert int(sampler.loss_count.sum()) > 0
    state = model.state_dict()
    assert {"step_sampler.loss_history", "step_sampler.loss_count", "step_sampler.loss_next"} <= set(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    _, fresh, _, _ = build(tiny_data, split)
    assert int(fresh.step_sampler.loss_count.sum()) == 0
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for name in ("loss_history", "loss_count", "loss_next"):
        assert torch.equal(getattr(fresh.step_sampler, name), getattr(sampler, name))
    assert torch.equal(fresh.step_sampler.probabilities(), sampler.probabilities())


def _ddp_worker(rank, world, init_file, queue):
    import torch.distributed as dist

    from recbole_diffusion.diffusion import StepImportanceSampler

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    sampler = StepImportanceSampler(5, history_size=3)
    steps = torch.tensor([rank, 4]) if rank == 0 else torch.tensor([rank, rank + 1, 4])
    sampler.record(steps, steps.float() * 10 + rank)
    queue.put((rank, sampler.loss_history.tolist(), sampler.loss_count.tolist()))  # plain data: the worker exits
    dist.destroy_process_group()


def test_sampler_history_is_shared_across_ddp_ranks(tmp_path):
    """Under torch.distributed every rank records every rank's values (unequal batch sizes too)."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")  # fork can deadlock torch's thread pools
    queue = context.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, join=True, start_method="spawn")
    results = dict((rank, (history, count)) for rank, history, count in (queue.get(), queue.get()))
    assert results[0] == results[1]
    history, count = results[0]
    assert count == [1, 1, 1, 0, 2]
    assert sorted(history[4][:2]) == [40.0, 41.0] and history[2][0] == 21.0


# ----------------------------------------------------------------------------- inference
def test_inference_is_seeded_and_averages_exactly_the_configured_draws(built):
    import torch.nn.functional as F

    config, model, _, valid_data = built
    model.eval()
    batch = first_batch(valid_data)[0]
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        assert torch.equal(scores, model.full_sort_predict(batch))  # reproducible
        history, slot = model._prefix_inputs(batch["item_id_list"], batch["item_length"])
        draws = config["n_sample_draws"]
        generator = torch.Generator().manual_seed(config["sample_seed"])
        x_T = torch.randn(history.size(0), draws, model.hidden_size, generator=generator)
        last = torch.full((history.size(0),), model.n_diffusion_steps - 1)
        probs = []
        for draw in range(draws):  # each draw through the plain encoder, one at a time
            h0 = model.denoise_prefix(history, slot, x_T[:, draw], last)
            probs.append(F.softmax(model.output_layer(h0), dim=-1))
        expected = torch.stack(probs).mean(0).log()
        assert torch.allclose(scores, expected, atol=1e-5)
        fewer = torch.stack(probs[:-1]).mean(0).log()
        assert not torch.allclose(scores, fewer, atol=1e-3)
        model.sample_seed += 1
        assert not torch.allclose(scores, model.full_sort_predict(batch), atol=1e-3)
        model.sample_seed -= 1
    assert scores.shape == (history.size(0), model.n_items)


def test_outputs_do_not_depend_on_trailing_padding(built):
    """DiffRec opts into the trimmed full-sort loader: a user's output is the same padded to L,
    in a batch of longer histories, or alone with no padding at all (same noise)."""
    from recbole_diffusion.evaluation import trims_eval_padding

    config, model, _, valid_data = built
    assert trims_eval_padding(config, type(model), "valid")
    model.eval()
    item_seq = first_batch(valid_data)[0]["item_id_list"].clone()
    lengths = torch.arange(item_seq.size(0)) % 9 + 1  # histories of 1..9 items, padded to L
    item_seq[torch.arange(item_seq.size(1)).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    x_slots = torch.randn(item_seq.size(0), 2, model.hidden_size, generator=torch.Generator().manual_seed(5))
    steps = torch.full((item_seq.size(0),), model.n_diffusion_steps - 1)
    with torch.no_grad():
        history, slot = model._prefix_inputs(item_seq, lengths)
        batched = model.denoise_slots(history, slot, x_slots, steps)
        for row in range(9):
            alone_history, alone_slot = model._prefix_inputs(item_seq[row : row + 1, : lengths[row]], lengths[row : row + 1])
            assert alone_history.size(1) == lengths[row] + 1
            alone = model.denoise_slots(alone_history, alone_slot, x_slots[row : row + 1], steps[row : row + 1])
            assert torch.allclose(alone, batched[row : row + 1], atol=1e-5)


def test_full_chain_runs_the_reverse_process_from_n_to_1(built, monkeypatch):
    _, model, _, valid_data = built
    model.eval()
    batch = first_batch(valid_data)[0]
    calls = []
    original = model.denoise_slots

    def counting(history, slot, x_t, t):
        calls.append(int(t[0]))
        return original(history, slot, x_t, t)

    monkeypatch.setattr(model, "denoise_slots", counting)
    monkeypatch.setattr(model, "n_sample_steps", None)
    with torch.no_grad():
        chain = model.full_sort_predict(batch)
    assert calls == list(range(model.n_diffusion_steps - 1, -1, -1))
    monkeypatch.setattr(model, "n_sample_steps", 1)
    calls.clear()
    with torch.no_grad():
        one = model.full_sort_predict(batch)
    assert calls == [model.n_diffusion_steps - 1]
    assert torch.isfinite(chain).all() and not torch.allclose(chain, one)


def test_end_to_end_training_checkpoint_and_resume(tiny_data, in_tmp_dir):
    """One epoch and evaluation through quick_start.run; the checkpoint holds the loss history
    and restoring it (load_data_and_model, the resume path's state loading) brings it back."""
    from recbole_diffusion.quick_start import load_data_and_model, run

    result = run("DiffRec", config_dict=tiny_config(tiny_data, **FAST), verbose=False)
    assert set(result["test_result"]) >= {"hit@10", "ndcg@10"}
    saved = torch.load(result["saved_model_file"], weights_only=True)["state_dict"]
    assert int(saved["step_sampler.loss_count"].sum()) > 0
    _, model, _, _, _, _ = load_data_and_model(result["saved_model_file"])
    assert torch.equal(model.step_sampler.loss_history, saved["step_sampler.loss_history"])
    assert torch.equal(model.step_sampler.loss_count, saved["step_sampler.loss_count"])


def test_prefix_mode_and_k_items_train_end_to_end(tiny_data, in_tmp_dir):
    from recbole_diffusion.quick_start import run

    config = tiny_config(tiny_data, train_mode="prefix", noised_items=2, use_position_embedding=False, **FAST)
    result = run("DiffRec", config_dict=config, verbose=False, saved=False)
    assert set(result["test_result"]) >= {"hit@10", "ndcg@10"}


# ----------------------------------------------------------------------------- ablations
def test_ablation_switches_remove_the_embeddings(tiny_data, split):
    _, model, _, valid_data = build(tiny_data, split, use_position_embedding=False, use_step_embedding=False, tie_output_weights=True)
    model.eval()
    assert model.output_layer.weight is model.item_embedding.weight
    batch = first_batch(valid_data)[0]
    history, slot = model._prefix_inputs(batch["item_id_list"], batch["item_length"])
    x_slot = torch.randn(history.size(0), model.hidden_size)
    with torch.no_grad():
        before = model.denoise_prefix(history, slot, x_slot, torch.full((history.size(0),), 3))
        model.position_embedding.weight.normal_()
        after = model.denoise_prefix(history, slot, x_slot, torch.full((history.size(0),), 40))
    assert torch.equal(before, after)  # neither positions nor the step reach the encoder


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("n_diffusion_steps", 0, "n_diffusion_steps"),
        ("noise_schedule", "quadratic", "noise_schedule"),
        ("n_sample_draws", 0, "n_sample_draws"),
        ("n_sample_steps", 0, "n_sample_steps"),
        ("n_sample_steps", 1001, "n_sample_steps"),
        ("sample_eta", 1.5, "sample_eta"),
        ("sample_seed", -1, "sample_seed"),
        ("inference", "full_chain", "inference"),  # an earlier name: refused, naming the new one
        ("n_inference_draws", 2, "n_inference_draws"),
        ("noised_items", 0, "noised_items"),
        ("mse_loss_weight", -1.0, "mse_loss_weight"),
        ("rec_loss_weight", -0.5, "rec_loss_weight"),
        ("step_sampling", "greedy", "step_sampling"),
        ("loss_history_size", 0, "loss_history_size"),
        ("importance_uniform_prob", 1.5, "importance_uniform_prob"),
        ("hidden_dropout_prob", 1.0, "hidden_dropout_prob"),
        ("hidden_size", 15, "n_heads"),  # the head count must divide the width
        ("use_step_embedding", "yes", "use_step_embedding"),
        ("embedding_init_std", 0.0, "embedding_init_std"),
        ("embedding_init_std", -1.0, "embedding_init_std"),
        ("readout", "middle", "readout"),
        ("output_bias", "no", "output_bias"),
        ("input_layer_norm", 2, "input_layer_norm"),
    ],
)
def test_invalid_hyperparameters_fail_in_config(tiny_data, key, value, message):
    assert_config_error("DiffRec", tiny_config(tiny_data, n_heads=2, **{key: value}), message)


def test_k_items_need_prefix_mode_and_fit_the_window(tiny_data):
    from recbole_diffusion.config import Config
    from recbole_diffusion.errors import ConfigError

    with pytest.raises(ConfigError, match="train_mode=prefix"):
        Config(model="DiffRec", config_dict=tiny_config(tiny_data, noised_items=2))
    with pytest.raises(ConfigError, match="noised_items"):
        Config(model="DiffRec", config_dict=tiny_config(tiny_data, noised_items=21, train_mode="prefix"))
    with pytest.raises(ConfigError, match="both are 0"):
        Config(model="DiffRec", config_dict=tiny_config(tiny_data, mse_loss_weight=0, rec_loss_weight=0))


def test_diffrec_is_ours_with_our_yaml_and_none_of_recboles_general_keys(tiny_data):
    import recbole
    import yaml

    from recbole_diffusion.config import Config
    from recbole_diffusion.model.sequential_recommender.diffrec import DiffRec

    config = Config(model="DiffRec", config_dict=tiny_config(tiny_data))
    assert config.model_class is DiffRec
    with open(os.path.join(os.path.dirname(recbole.__file__), "properties", "model", "DiffRec.yaml")) as handle:
        general_keys = set(yaml.safe_load(handle))
    assert {"dims_dnn", "embedding_size", "steps", "history_num_per_term", "reweight"} <= general_keys
    # noise_schedule is the one name both use, for the same thing (the schedule); ours is ours
    leaked = (general_keys - {"noise_schedule"}) & set(config.final_config_dict)
    assert not leaked, leaked
    assert config["noise_schedule"] == "sqrt" and config["n_diffusion_steps"] == 1000
    assert config["train_mode"] == "sequence" and config["hidden_dropout_prob"] == 0.3


def run_cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "run_recbole_diff.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


def test_command_line_runs_diffrec_with_the_full_chain(tiny_data, tmp_path):
    data_path, name = tiny_data
    done = run_cli(
        [
            "--model=DiffRec", f"--dataset={name}", f"--data_path={data_path}", "--epochs=1", "--hidden_size=16",
            "--n_layers=1", "--n_heads=1", "--MAX_ITEM_LIST_LENGTH=20", "--n_diffusion_steps=10",
            "--n_sample_draws=2", "--n_sample_steps=full", "--show_progress=False", "--gpu_id=",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test result" in done.stdout and "ndcg@10" in done.stdout


def test_hyper_file_is_a_recbole_search_space():
    from recbole.trainer.hyper_tuning import HyperTuning

    space = HyperTuning._build_space_from_file(os.path.join(REPO, "hyper", "DiffRec.hyper"))
    assert set(space) == {"hidden_dropout_prob", "attn_dropout_prob", "learning_rate", "n_sample_draws", "noise_schedule"}


def test_embedding_init_std_sets_item_and_position_scale(tiny_data):
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation

    stds = {}
    for value in (0.02, 1.0):
        config = Config(model="DiffRec", config_dict=tiny_config(tiny_data, n_heads=2, embedding_init_std=value))
        train_data, _, _ = data_preparation(config, create_dataset(config))
        model = build_model(config, train_data)
        stds[value] = (model.item_embedding.weight.std().item(), model.position_embedding.weight.std().item(),
                       model.output_layer.weight.std().item())
    for value, (item_std, position_std, output_std) in stds.items():
        assert item_std == pytest.approx(value, rel=0.1) and position_std == pytest.approx(value, rel=0.2)
        assert output_std == pytest.approx(0.02, rel=0.1)  # the layers keep initializer_range
