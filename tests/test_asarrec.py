"""AsarRec: operator matrices, Semi-Sinkhorn, the budget, candidates, config checks, quick runs."""

import pytest
import torch

from conftest import assert_config_error, tiny_config

from recbole_diffusion import augmentation as aug
from recbole_diffusion.layers import semi_sinkhorn

FAST = {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1}

# ----------------------------------------------------------------------------- operator matrices
# one right-padded sequence v1..v5 (ids 11..15) in a window of 7, and two candidate items c1, c2
SEQ = torch.tensor([[11, 12, 13, 14, 15, 0, 0]])
LEN = torch.tensor([5])
CANDIDATES = torch.tensor([[91, 92]])
SLOTS = torch.cat([SEQ, CANDIDATES], dim=1)  # slots 0..6: the window, 7..8: c1, c2
WIDTH = 9


def view_of(sources):
    """The view M @ s*, computed as a matrix product; checks M is hard semi-doubly stochastic."""
    matrix = aug.source_matrix(sources, SLOTS.shape[1])
    assert set(matrix.unique().tolist()) <= {0.0, 1.0}
    assert matrix.sum(dim=2).max() <= 1 and matrix.sum(dim=1).max() <= 1
    view = (matrix @ SLOTS.unsqueeze(-1).float()).squeeze(-1).long()
    assert torch.equal(view, aug.gather_slots(sources, SLOTS))
    return view[0].tolist()


def padded(items):
    return items + [0] * (WIDTH - len(items))


def test_crop_keeps_a_contiguous_slice_moved_to_the_front():
    # CL4SRec's crop: s[start : start + keep]
    assert view_of(aug.crop_sources(torch.tensor([1]), torch.tensor([3]), WIDTH)) == padded([12, 13, 14])


def test_mask_empties_positions_in_place():
    masked = torch.tensor([[False, True, False, True, False, False, False]])
    assert view_of(aug.mask_sources(LEN, masked, WIDTH)) == padded([11, 0, 13, 0, 15])


def test_reorder_permutes_the_items():
    order = torch.tensor([[0, 3, 1, 2, 4, 5, 6]])
    assert view_of(aug.reorder_sources(LEN, order, WIDTH)) == padded([11, 14, 12, 13, 15])


def test_substitute_replaces_items_by_candidates_in_order():
    chosen = torch.tensor([[False, True, False, True, False, False, False]])
    assert view_of(aug.substitute_sources(LEN, chosen, WIDTH, 7)) == padded([11, 91, 13, 92, 15])


def test_insert_puts_candidates_before_marked_items_and_shifts_the_rest():
    before = torch.tensor([[False, False, True, False, True, False, False]])
    assert view_of(aug.insert_sources(LEN, before, WIDTH, 7)) == padded([11, 12, 91, 13, 14, 92, 15])
    first = torch.tensor([[True, False, False, False, False, False, False]])
    assert view_of(aug.insert_sources(LEN, first, WIDTH, 7)) == padded([91, 11, 12, 13, 14, 15])


def test_keep_last_drops_the_oldest_positions_of_a_long_view():
    before = torch.tensor([[True, False, True, False, False, False, False]])
    sources = aug.keep_last(aug.insert_sources(LEN, before, WIDTH, 7), 5)
    assert aug.gather_slots(sources, SLOTS)[0].tolist() == [12, 92, 13, 14, 15]
    assert aug.gather_slots(aug.keep_last(aug.identity_sources(LEN, WIDTH), 7), SLOTS)[0].tolist() == [11, 12, 13, 14, 15, 0, 0]


def test_view_length_counts_masked_positions_inside_the_view():
    assert aug.view_lengths(torch.tensor([[11, 0, 13, 0, 0], [0, 0, 0, 0, 0]])).tolist() == [3, 0]


RATIOS = {"crop": 0.2, "mask": 0.7, "reorder": 0.5, "insert": 0.4, "substitute": 0.3}


def random_batch(batch=64, width=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=generator)
    seq = torch.randperm(999, generator=generator)[: batch * width].view(batch, width) + 1
    seq = seq * (torch.arange(width) < lengths.unsqueeze(1))
    return seq, lengths, generator


@pytest.mark.parametrize("operator", aug.COSEREC_OPERATORS)
def test_static_operators_follow_cl4srec_and_coserec(operator):
    """Each drawn view is exactly what CL4SRec's / CoSeRec's list operation gives."""
    seq, lengths, generator = random_batch()
    sources, anchors = aug.sample_static(seq, lengths, (operator,), RATIOS, generator)
    width = seq.shape[1]
    new = 1000 + torch.arange(anchors.shape[1]).expand(len(seq), -1)  # recognisable candidates
    views = aug.gather_slots(sources, torch.cat([seq, new], dim=1))
    for row in range(len(seq)):
        original, n = seq[row, : lengths[row]].tolist(), int(lengths[row])
        view = views[row].tolist()
        if operator == "crop":
            keep = max(1, int(RATIOS["crop"] * n))
            body = view[:keep]
            assert view[keep:] == [0] * (len(view) - keep)
            assert any(original[s : s + keep] == body for s in range(n - keep + 1))
        elif operator == "mask":
            body = view[:n]
            assert sum(v == 0 for v in body) == int(RATIOS["mask"] * n)
            assert all(v in (0, o) for v, o in zip(body, original))
        elif operator == "reorder":
            body = view[:n]
            assert sorted(body) == sorted(original)
            changed = [j for j in range(n) if body[j] != original[j]]
            if changed:
                assert changed[-1] - changed[0] < int(RATIOS["reorder"] * n)
        else:
            count = max(1, int(RATIOS[operator] * n))
            added = [v for v in view if v >= 1000]
            assert added == list(range(1000, 1000 + count))
            if operator == "insert":
                assert [v for v in view if 0 < v < 1000] == original and len(view[: n + count]) == n + count
                # a new item stands right before the item it is correlated with (its anchor)
                for c, anchor in enumerate(anchors[row, :count].tolist()):
                    assert view[view.index(1000 + c) + 1] == original[anchor]
            else:
                assert [original[a] for a in anchors[row, :count].tolist()] == [
                    o for o, v in zip(original, view) if v >= 1000
                ]
                assert sum(v != o for v, o in zip(view[:n], original)) == count
        assert all(v == 0 for v in view[width + anchors.shape[1] :])


# ----------------------------------------------------------------------------- Semi-Sinkhorn
def test_semi_sinkhorn_rows_and_capped_columns_sum_to_at_most_one():
    torch.manual_seed(0)
    scores = torch.randn(8, 10, 7) * 3
    valid = torch.rand(8, 10, 7) > 0.2
    capped = torch.ones(7, dtype=torch.bool)
    capped[-1] = False
    soft = semi_sinkhorn(scores, 10, valid, capped)
    assert (soft >= 0).all() and (soft[~valid] == 0).all()
    assert soft.sum(dim=2).max() <= 1 + 1e-5
    assert soft[..., :-1].sum(dim=1).max() <= 1 + 1e-5
    assert soft[..., -1].sum(dim=1).max() > 1.5, "the uncapped column collects mass beyond 1"
    # a row with little mass keeps it: the projection is partial, not a full Sinkhorn
    small = semi_sinkhorn(torch.full((1, 3, 3), -5.0), 10)
    torch.testing.assert_close(small, torch.full((1, 3, 3), torch.tensor(-5.0).exp()))


def learned_case(batch=32, width=10, n_candidates=3, seed=0, scale=3.0):
    """A random soft matrix of the interleaved frame, as the model builds it."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=generator)
    allowed = aug.interleaved_options(lengths, width, n_candidates)
    capped = torch.ones(width + n_candidates + 1, dtype=torch.bool)
    capped[-1] = False
    scores = torch.randn(batch, 2 * width, width + n_candidates + 1, generator=generator) * scale
    return semi_sinkhorn(scores, 10, allowed, capped), lengths, allowed


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6])
def test_hard_matrix_is_semi_doubly_stochastic_and_within_the_budget(ratio):
    soft, lengths, allowed = learned_case()
    budget = aug.perturbation_budget(lengths, ratio)
    sources, n_edits = aug.budgeted_assignment(soft, lengths, budget, threshold=0.05)
    n_slots = soft.shape[-1] - 1
    hard = aug.source_matrix(sources, n_slots)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert set(hard.sum(dim=2).unique().tolist()) <= {0.0, 1.0}
    assert set(hard.sum(dim=1).unique().tolist()) <= {0.0, 1.0}
    assert allowed[..., :-1][hard.bool()].all(), "only allowed entries"
    identity = aug.interleaved_identity(lengths, soft.shape[1] // 2)
    changed = (sources != identity).sum(dim=1)
    assert torch.equal(changed, n_edits)
    assert (changed <= budget).all()
    assert (changed > 0).any(), "the soft matrix asks for edits: some are made"
    assert (budget == torch.ceil(ratio * lengths - 1e-6).long()).all()


def test_edits_follow_the_soft_matrix():
    """A soft matrix that clearly asks for one swap, one substitute and one insert gets them."""
    width, k = 4, 2
    lengths = torch.tensor([4])
    frame = torch.zeros(1, 2 * width, width + k + 1)
    frame[0, 0::2, -1] = 1.0  # gaps: nothing
    for j in range(width):
        frame[0, 2 * j + 1, j] = 1.0
    for row, choices in ((1, {2: 0.9, 0: 0.1}), (7, {width: 0.8, 3: 0.2}), (4, {width + 1: 0.7, -1: 0.3})):
        # item 0 wants slot 2; item 3 -> candidate 0; insert before item 2
        frame[0, row, :] = 0
        for column, weight in choices.items():
            frame[0, row, column] = weight
    sources, n_edits = aug.budgeted_assignment(frame, lengths, torch.tensor([4]), threshold=0.5)
    compacted = aug.compose(aug.compact(torch.where(sources >= 0, torch.arange(8), -1)), sources)
    view = aug.gather_slots(compacted, torch.tensor([[11, 12, 13, 14, 91, 92]]))
    assert view[0].tolist() == [13, 12, 92, 11, 91, 0, 0, 0]  # swap (2 edits), insert, substitute
    assert n_edits.item() == 4
    _, limited = aug.budgeted_assignment(frame, lengths, torch.tensor([1]), threshold=0.5)
    assert limited.item() == 1


@pytest.mark.parametrize("seed", range(12))
def test_the_gpu_acceptance_loop_gives_the_cpu_loops_result(seed, monkeypatch):
    """Off the CPU the greedy acceptance writes every row each step and reads the host only every
    few steps; run here on the CPU, both loops give the same sources and edit counts."""
    generator = torch.Generator().manual_seed(100 + seed)
    batch, width = (1, 48, 64)[seed % 3], (3, 10, 25)[seed % 3]
    soft, lengths, _ = learned_case(batch=batch, width=width, seed=seed, scale=(1.0, 3.0, 8.0)[seed % 3])
    budget = aug.perturbation_budget(lengths, (0.1, 0.3, 0.6, 1.0)[seed % 4])
    budget = torch.where(torch.rand(batch, generator=generator) < 0.2, torch.zeros_like(budget), budget)
    threshold = (0.0, 0.05, 0.3)[seed % 3]
    cpu = aug.budgeted_assignment(soft, lengths, budget, threshold)
    monkeypatch.setattr(aug, "_accept_edits", aug._accept_edits_without_host_waits)
    other = aug.budgeted_assignment(soft, lengths, budget, threshold)
    assert torch.equal(cpu[0], other[0]) and torch.equal(cpu[1], other[1])
    assert (cpu[1] > 0).any() or seed % 3 == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_gpu_acceptance_loop_accepts_nothing_once_every_sequence_is_done(seed, monkeypatch):
    """Budgets of one edit and strong preferences for taken slots: every sequence is done well
    before the last proposal, between two of the GPU loop's host reads."""
    soft, lengths, _ = learned_case(batch=16, width=20, n_candidates=1, seed=seed, scale=8.0)
    budget = torch.ones(16, dtype=torch.long)
    budget[0] = 2
    cpu = aug.budgeted_assignment(soft, lengths, budget, 0.0)
    monkeypatch.setattr(aug, "_accept_edits", aug._accept_edits_without_host_waits)
    other = aug.budgeted_assignment(soft, lengths, budget, 0.0)
    assert torch.equal(cpu[0], other[0]) and torch.equal(cpu[1], other[1])


# ----------------------------------------------------------------------------- the model
def build(tiny_data, **overrides):
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = Config(model="AsarRec", config_dict=tiny_config(tiny_data, **{**FAST, **overrides}))
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, build_model(config, train_data), train_data, valid_data, test_data


@pytest.fixture(scope="module")
def built(tiny_data):
    return build(tiny_data, n_candidates=8, perturbation_budget=0.3)


def held_out_items(valid_data, test_data):
    items = {}
    for data in (valid_data, test_data):
        feat = data._dataset.inter_feat
        for user, item in zip(feat["user_id"].tolist(), feat["item_id"].tolist()):
            items.setdefault(user, set()).add(item)
    return items


def test_learned_views_respect_the_budget_and_never_insert_held_out_items(built):
    _, model, train_data, valid_data, test_data = built
    held_out = held_out_items(valid_data, test_data)
    model.train()
    torch.manual_seed(0)
    n_new = 0
    with torch.no_grad():
        for batch in train_data:
            seq, lengths, users = batch["item_id_list"], batch["item_length"], batch["user_id"]
            excluded = model.excluded_items(users)
            states = model.augmenter_states(seq)
            view, _, interleaved, n_edits = model.learned_view(seq, lengths, states, excluded)
            assert (n_edits <= aug.perturbation_budget(lengths, 0.3)).all()
            assert set(interleaved.unique().tolist()) <= {0.0, 1.0}
            candidates = model.sequence_candidates(seq, lengths, excluded)
            for row, user in enumerate(users.tolist()):
                new_items = set(view[row].tolist()) - set(seq[row].tolist()) - {0}
                n_new += len(new_items)
                assert not new_items & held_out[user]
                assert not set(candidates[row].tolist()) & (held_out[user] | {0})
    assert n_new > 0, "some views insert or substitute"


def test_static_coserec_never_inserts_held_out_items(tiny_data):
    _, model, train_data, valid_data, test_data = build(tiny_data, augmentation="static_coserec")
    held_out = held_out_items(valid_data, test_data)
    torch.manual_seed(0)
    n_new = 0
    with torch.no_grad():
        for batch in train_data:
            seq, users = batch["item_id_list"], batch["user_id"]
            view, _ = model.static_view(seq, batch["item_length"], model.excluded_items(users))
            assert view.shape == seq.shape
            for row, user in enumerate(users.tolist()):
                new_items = set(view[row].tolist()) - set(seq[row].tolist()) - {0}
                n_new += len(new_items)
                assert not new_items & held_out[user]
    assert n_new > 0


def test_straight_through_gradient_trains_the_augmenter(built):
    _, model, train_data, _, _ = built
    model.train()
    model.zero_grad()
    model.calculate_loss(next(iter(train_data))).backward()
    for name in ("identity_bias", "item_row_query.weight", "item_slot_key.weight", "augmenter_encoder.layer.0.feed_forward.dense_1.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_evaluation_encodes_the_original_sequence(built):
    _, model, _, valid_data, _ = built
    model.eval()
    batch = next(iter(valid_data))[0]
    with torch.no_grad():
        first, second = model.full_sort_predict(batch), model.full_sort_predict(batch)
        hidden = model.encode(batch["item_id_list"])
        expected = model.gather_indexes(hidden, batch["item_length"] - 1) @ model.item_embedding.weight.t()
    assert torch.equal(first, second)
    torch.testing.assert_close(first, expected)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "override, option",
    [
        ({"backbone": "FMLPRec"}, "backbone"),
        ({"augmentation": "random"}, "augmentation"),
        ({"perturbation_budget": 0.0}, "perturbation_budget"),
        ({"perturbation_budget": 1.0}, "perturbation_budget"),
        ({"n_candidates": 0}, "n_candidates"),
        ({"sinkhorn_iterations": 0}, "sinkhorn_iterations"),
        ({"sinkhorn_temperature": 0.0}, "sinkhorn_temperature"),
        ({"hard_threshold": 1.5}, "hard_threshold"),
        ({"ndcg_threshold": -0.1}, "ndcg_threshold"),
        ({"diversity_weight": -1.0}, "diversity_weight"),
        ({"augmenter_heads": 3}, "augmenter_heads"),
        ({"mask_ratio": 1.2}, "mask_ratio"),
        ({"crop_ratio": 0.0}, "crop_ratio"),
        ({"loss_type": "BPR"}, "loss_type"),
        ({"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}, "train_neg_sample_args"),
    ],
)
def test_invalid_settings_fail_in_config_naming_the_option(tiny_data, override, option):
    assert_config_error("AsarRec", tiny_config(tiny_data, **{**FAST, **override}), option)


def test_defaults(tiny_data):
    from recbole_diffusion.config import Config

    config = Config(model="AsarRec", config_dict={"data_path": tiny_data[0], "dataset": tiny_data[1]})
    expected = {"backbone": "SASRec", "augmentation": "learned", "perturbation_budget": 0.1, "train_mode": "sequence",
                "cl_weight": 0.01, "train_noise_ratio": 0.0}
    assert {key: config[key] for key in expected} == expected


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize(
    "backbone, augmentation, mode",
    [("SASRec", "learned", "sequence"), ("GRU4Rec", "learned", "sequence"), ("SASRec", "static_cl4srec", "prefix")],
)
def test_quick_run_trains_and_evaluates(tiny_data, in_tmp_dir, backbone, augmentation, mode):
    from recbole_diffusion.quick_start import run

    config = tiny_config(tiny_data, **FAST, backbone=backbone, augmentation=augmentation, train_mode=mode, epochs=2,
                         train_noise_ratio=0.1)
    result = run(model="AsarRec", config_dict=config, saved=True, verbose=False)
    for split in ("best_valid_result", "test_result"):
        values = dict(result[split])
        assert set(values) >= {"hit@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert len(result["epoch_seconds"]) == 2


def test_the_user_item_table_moves_with_the_model_and_stays_out_of_the_state_dict(tiny_data):
    """The table AsarRec draws candidates from is the data's: a buffer, moved by .to(device) once (not
    copied to the GPU at every step), and not stored in checkpoints."""
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = Config(model="AsarRec", config_dict=tiny_config(tiny_data))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = build_model(config, train_data)
    buffers = dict(model.named_buffers())
    assert "user_item_indptr" in buffers and "user_item_ids" in buffers
    assert not any(key.startswith("user_item_") for key in model.state_dict())
    assert model.to(torch.float64).user_item_ids.dtype == torch.long  # an index table keeps its type
