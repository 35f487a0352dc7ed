"""ADARec (the paper's figure) and ADARecReleased (the authors' code): depth controller, trajectory,
router/gate, ablation switches, shared layers, config, runs."""

import pytest
import torch

from conftest import assert_config_error, tiny_config

FAST = {"hidden_size": 16, "inner_size": 32, "n_heads": 2, "n_prototypes": 8, "max_depth": 6}


def fast(model):
    """FAST without the options ``model`` does not read (ADARecReleased has fixed expert depths)."""
    return {k: v for k, v in FAST.items() if not (model == "ADARecReleased" and k == "max_depth")}


def build(tiny_data, model="ADARec", **overrides):
    """(model, train_data, valid_data) on the tiny dataset."""
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = Config(model=model, config_dict=tiny_config(tiny_data, **{**fast(model), **overrides}))
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    return build_model(config, train_data), train_data, valid_data


@pytest.fixture(scope="module")
def paper(tiny_data):
    return build(tiny_data)


def last_positions(model, valid_data):
    """The first valid batch's histories and a [B, L] mask of each one's last position."""
    batch = next(iter(valid_data))[0]
    item_seq = batch[model.ITEM_SEQ]
    last = torch.zeros_like(item_seq, dtype=torch.bool)
    last[torch.arange(item_seq.size(0)), batch[model.ITEM_SEQ_LEN] - 1] = True
    return item_seq, last


# ----------------------------------------------------------------------------- controller
def test_controller_gives_one_depth_per_sequence_and_a_straight_through_gradient(paper):
    model, train_data, valid_data = paper
    item_seq, last = last_positions(model, valid_data)
    model.train()
    torch.manual_seed(0)
    model.zero_grad()
    h, logits, parts = model.paper_forward(item_seq, last)
    n = item_seq.size(0)
    assert logits.shape == (n, model.max_depth)
    assert parts["depth"].shape == (n,)
    assert int(parts["depth"].min()) >= 1 and int(parts["depth"].max()) <= model.max_depth
    assert len(set(parts["depth"].tolist())) > 1, "Gumbel sampling over fresh controller logits varies"
    # the hard sample is one-hot in the forward pass, yet differentiable with respect to the logits
    (parts["output"] @ model.item_embedding.weight.t()).logsumexp(-1).mean().backward()
    for name in ("controller.fc.weight", "controller.gru.weight_ih_l0", "controller.length_embedding.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name

    model.eval()
    with torch.no_grad():
        _, logits, parts = model.paper_forward(item_seq, last)
        _, _, again = model.paper_forward(item_seq, last)
    assert torch.equal(parts["depth"], logits.argmax(-1) + 1)
    assert torch.equal(parts["output"], again["output"]), "evaluation is deterministic"


def test_sequence_batch_loss_equals_the_prefix_batch_loss_over_the_same_targets(tiny_data):
    """The controller and encoder are causal: position j of a window gets exactly what the prefix
    ending at j gets alone (same depth, same output), so both batch kinds give the same loss."""
    from recbole.data.interaction import Interaction

    model, train_data, _ = build(tiny_data, deno_weight=0.0)
    model.eval()  # argmax depth, noise-free trajectory: the loss is deterministic
    seq_batch = next(iter(train_data))
    item_seq, targets = seq_batch[model.ITEM_SEQ], seq_batch[model.TARGET_SEQ]
    rows, positions = torch.nonzero(targets > 0, as_tuple=True)
    width = item_seq.size(1)
    keep = torch.arange(width).unsqueeze(0) <= positions.unsqueeze(1)
    prefix_batch = Interaction({
        model.ITEM_SEQ: item_seq[rows] * keep,
        model.ITEM_SEQ_LEN: positions + 1,
        model.POS_ITEM_ID: targets[rows, positions],
    })
    with torch.no_grad():
        sequence_terms = model.loss_terms(seq_batch)
        prefix_terms = model.loss_terms(prefix_batch)
    assert set(sequence_terms) == {"rec", "expl", "cont", "cluster"}
    for name in sequence_terms:
        torch.testing.assert_close(sequence_terms[name], prefix_terms[name], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- trajectory
def test_trajectory_has_the_chosen_depth_and_masking_hides_the_rest(paper):
    model, _, valid_data = paper
    item_seq, last = last_positions(model, valid_data)
    model.eval()
    with torch.no_grad():
        h = model.encoder(item_seq)[last]
        depth = torch.arange(h.size(0)) % model.max_depth + 1
        states = model.trajectory(h, depth)
        # the reverse chain written out for each sample: x_{T_u} = sqrt(ᾱ) x_0, then T_u posterior means
        alpha_bar = torch.cumprod(1 - model.diffusion.betas.double(), 0)
        for i in range(h.size(0)):
            t_u = int(depth[i])
            x = (alpha_bar[t_u - 1].sqrt() * h[i].double()).float().unsqueeze(0)
            assert torch.allclose(states[i, t_u:], x.expand(model.max_depth - t_u, -1), atol=1e-6)
            for t in reversed(range(t_u)):
                x0 = model.denoise(x, torch.tensor([t]))
                abar, abar_prev = alpha_bar[t].item(), (alpha_bar[t - 1].item() if t else 1.0)
                beta = 1 - abar / abar_prev
                x = (abar_prev**0.5 * beta / (1 - abar)) * x0 + ((1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar)) * x
                torch.testing.assert_close(states[i, t], x[0], rtol=1e-4, atol=1e-5)

        # the mask has the chosen depth's length; states behind it do not change the output
        logits = torch.randn(h.size(0), model.max_depth)
        parts = model.augment(h, logits)
        assert torch.equal(parts["mask"].sum(-1).long(), parts["depth"])
        slots = torch.arange(model.max_depth).unsqueeze(0)
        assert torch.equal(parts["mask"].bool(), slots < parts["depth"].unsqueeze(1))
        original = model.trajectory
        model.trajectory = lambda x0, d: original(x0, d) + 100.0 * (slots >= d.unsqueeze(1)).unsqueeze(-1)
        try:
            perturbed = model.augment(h, logits)
        finally:
            model.trajectory = original
    torch.testing.assert_close(perturbed["output"], parts["output"])


def test_without_the_denoiser_the_trajectory_is_the_forward_noising(tiny_data):
    model, _, valid_data = build(tiny_data, use_denoiser=False)
    assert not hasattr(model, "denoiser") or model.denoiser is None
    model.eval()
    item_seq, last = last_positions(model, valid_data)
    with torch.no_grad():
        h = model.encoder(item_seq)[last]
        states = model.trajectory(h, torch.full((h.size(0),), model.max_depth))
    scale = model.diffusion.sqrt_alphas_cumprod
    torch.testing.assert_close(states[:, 0], h)
    for k in range(1, model.max_depth):
        torch.testing.assert_close(states[:, k], scale[k - 1] * h)


# ----------------------------------------------------------------------------- router and gate
def test_router_and_gate_weights_sum_to_one(paper):
    from recbole_diffusion.layers import SoftmaxGate, weighted_pool

    model, _, valid_data = paper
    item_seq, last = last_positions(model, valid_data)
    model.eval()
    with torch.no_grad():
        _, _, parts = model.paper_forward(item_seq, last)
    n = item_seq.size(0)
    assert parts["router"].shape == (n, model.max_depth, 2) and parts["gate"].shape == (n, 2)
    torch.testing.assert_close(parts["router"].sum(-1), torch.ones(n, model.max_depth))
    torch.testing.assert_close(parts["gate"].sum(-1), torch.ones(n))
    assert (parts["router"] > 0).all() and (parts["gate"] > 0).all()

    gate = SoftmaxGate(5, 3)
    torch.testing.assert_close(gate(torch.randn(4, 7, 5)).sum(-1), torch.ones(4, 7))
    states, weights = torch.randn(4, 6, 3), torch.rand(4, 6, 2)
    mask = (torch.arange(6) < torch.tensor([[1], [3], [6], [2]])).float()
    expected = torch.stack([
        torch.stack([(weights[i, :, e] * mask[i]) @ states[i] / (weights[i, :, e] * mask[i]).sum() for e in range(2)])
        for i in range(4)
    ])
    torch.testing.assert_close(weighted_pool(states, weights, mask), expected)


# ----------------------------------------------------------------------------- ablation switches
PAPER_TERMS = {"rec", "deno", "expl", "cont", "cluster"}
RELEASED_TERMS = {"rec", "rec_noised", "deno", "expl", "instance", "cont", "cluster"}


@pytest.mark.parametrize(
    "overrides, terms, gone",
    [
        ({}, PAPER_TERMS, ()),
        ({"use_depth_controller": False}, PAPER_TERMS - {"expl"}, ("controller.",)),
        ({"use_denoiser": False}, PAPER_TERMS - {"deno"}, ("denoiser.",)),
        ({"use_router": False}, PAPER_TERMS, ("router.",)),
        ({"use_gate": False}, PAPER_TERMS, ("gate.",)),
        ({"expl_weight": 0.0}, PAPER_TERMS - {"expl"}, ()),
        ({"deno_weight": 0.0}, PAPER_TERMS - {"deno"}, ()),
        ({"cont_weight": 0.0}, PAPER_TERMS - {"cont"}, ()),
        ({"cont_weight": 0.0, "cluster_weight": 0.0}, {"rec", "deno", "expl"}, ("prototypes",)),
        ({"use_augmentation": False}, {"rec", "cont", "cluster"},
         ("controller.", "denoiser.", "router.", "gate.", "moe_experts.", "step_embedding.")),
        ({"model": "ADARecReleased"}, RELEASED_TERMS, ()),
        ({"model": "ADARecReleased", "use_depth_controller": False}, RELEASED_TERMS - {"expl"}, (".controller.",)),
        ({"model": "ADARecReleased", "use_augmentation": False}, {"rec", "instance", "cont", "cluster"},
         (".controller.",)),
        ({"model": "ADARecReleased", "instance_cl_weight": 0.0, "noised_rec_weight": 0.0},
         RELEASED_TERMS - {"instance", "rec_noised"}, ()),
        ({"model": "ADARecReleased", "cont_weight": 0.0, "cluster_weight": 0.0},
         RELEASED_TERMS - {"cont", "cluster"}, ("prototypes",)),
    ],
)
def test_switching_a_component_off_removes_its_loss_and_parameters(tiny_data, overrides, terms, gone):
    model, train_data, _ = build(tiny_data, **overrides)
    model.train()
    torch.manual_seed(0)
    found = model.loss_terms(next(iter(train_data)))
    assert set(found) == terms
    names = [name for name, _ in model.named_parameters()]
    for piece in gone:
        assert not any(piece in name for name in names), piece
    model.zero_grad()
    model.weighted_sum(found).backward()
    # every parameter that remains is trained by the remaining losses
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == [], dead


def test_each_loss_trains_its_own_component(paper):
    model, train_data, _ = paper
    model.train()
    torch.manual_seed(0)
    terms = model.loss_terms(next(iter(train_data)))
    owners = {"deno": "denoiser.0.weight", "expl": "controller.fc.weight", "cont": "prototypes", "cluster": "prototypes"}
    parameters = dict(model.named_parameters())
    for name, owner in owners.items():
        model.zero_grad()
        terms[name].backward(retain_graph=True)
        assert parameters[owner].grad is not None and parameters[owner].grad.abs().sum() > 0, name
    model.zero_grad()
    terms["deno"].backward(retain_graph=True)
    assert parameters["encoder.item_embedding.weight"].grad is None, "L_deno's target is detached"
    model.zero_grad()
    terms["expl"].backward(retain_graph=True)
    assert parameters["encoder.item_embedding.weight"].grad is None, "the controller reads detached states"


# ----------------------------------------------------------------------------- shared layers
def test_info_nce_is_cl4srec_nce_loss():
    from recbole_diffusion.layers import info_nce

    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    for lab in (None, labels):
        # the released NCELoss, written out
        s11, s22, s12 = a @ a.t() / 0.5, b @ b.t() / 0.5, a @ b.t() / 0.5
        same = torch.eye(6, dtype=torch.bool) if lab is None else lab[:, None] == lab[None, :]
        s11, s22 = s11.masked_fill(same, float("-inf")), s22.masked_fill(same, float("-inf"))
        s12 = s12.masked_fill(same & ~torch.eye(6, dtype=torch.bool), float("-inf"))
        logits = torch.cat([torch.cat([s12, s11], -1), torch.cat([s22, s12.t()], -1)], -2)
        expected = torch.nn.functional.cross_entropy(logits, torch.arange(12))
        torch.testing.assert_close(info_nce(a, b, 0.5, labels=lab), expected)


def test_released_views_are_cl4srec_crop_mask_or_reorder():
    """ADARecReleased's two views per sequence come from the one static augmentation module."""
    from recbole_diffusion.augmentation import cl4srec_views

    torch.manual_seed(0)
    lengths = torch.randint(1, 21, (300,))
    seq = (torch.arange(1, 21).expand(300, 20) * (torch.arange(20) < lengths[:, None])) + 100 * torch.arange(300)[:, None]
    seq = seq * (torch.arange(20) < lengths[:, None])
    view, view_len = cl4srec_views(seq, lengths, 0.2, 0.7, 0.2)
    kinds = set()
    for row in range(300):
        n, original, new = int(lengths[row]), seq[row, : lengths[row]].tolist(), view[row].tolist()
        assert all(v == 0 for v in new[int(view_len[row]):]), "right padded"
        assert new[int(view_len[row]) - 1] != 0 or n == 1, "the length ends at the view's last item"
        kept = new[:n]
        k = max(1, int(0.2 * n))
        if any(original[s : s + k] == new[:k] for s in range(n - k + 1)) and all(v == 0 for v in new[k:]) and k < n:
            kinds.add("crop")  # a contiguous slice moved to the front
        elif 0 in kept:  # mask: floor(0.7 n) items zeroed, the rest in place
            assert kept.count(0) == int(0.7 * n)
            assert all(v in (0, o) for v, o in zip(kept, original))
            kinds.add("mask")
        else:  # reorder (or a crop / mask that leaves a short sequence as it is): a permutation inside one slice
            assert sorted(kept) == sorted(original)
            moved = [i for i, (v, o) in enumerate(zip(kept, original)) if v != o]
            assert not moved or moved[-1] - moved[0] < max(1, int(0.2 * n))
            kinds.add("reorder")
    assert kinds == {"crop", "mask", "reorder"}


def test_negative_samples_avoid_the_row_items():
    from recbole_diffusion.layers import sample_negative_items

    torch.manual_seed(0)
    exclude = torch.stack([torch.arange(1, 9), torch.arange(2, 10)])  # 8 of the 9 real items per row
    negatives = sample_negative_items(10, (2, 50), exclude, max_tries=200)
    assert torch.equal(negatives, torch.tensor([[9] * 50, [1] * 50]))


# ----------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("name", ["ADARec", "ADARecReleased"])
def test_scores_ignore_trailing_padding(tiny_data, name):
    from recbole.data.interaction import Interaction

    model, _, valid_data = build(tiny_data, model=name)
    model.eval()
    batch = next(iter(valid_data))[0]
    item_seq = batch[model.ITEM_SEQ]
    assert item_seq.size(1) == model.max_seq_length
    length = torch.arange(item_seq.size(0)) % 12 + 1  # the histories' first 1..12 items
    item_seq = item_seq * (torch.arange(item_seq.size(1)) < length.unsqueeze(1))
    width = int(length.max())
    trimmed = Interaction({model.ITEM_SEQ: item_seq[:, :width], model.ITEM_SEQ_LEN: length})
    padded = Interaction({model.ITEM_SEQ: item_seq, model.ITEM_SEQ_LEN: length})
    with torch.no_grad():
        torch.testing.assert_close(model.full_sort_predict(trimmed), model.full_sort_predict(padded))


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "override, option",
    [
        ({"adarec_mode": "released"}, "adarec_mode"),
        ({"model": "ADARecReleased", "adarec_mode": "released"}, "adarec_mode"),
        ({"model": "ADARecReleased", "released_depths": [[2, 3]]}, "released_depths"),  # an earlier name
        ({"max_depth": 0}, "max_depth"),
        ({"max_depth": 51}, "max_depth"),
        ({"n_diffusion_steps": 8, "max_depth": 10}, "max_depth"),
        ({"model": "ADARecReleased", "expert_depths": [[4, 60]]}, "expert_depths"),
        ({"model": "ADARecReleased", "expert_depths": [[]]}, "expert_depths"),
        ({"model": "ADARecReleased", "expert_depths": 5}, "expert_depths"),
        ({"model": "ADARecReleased", "crop_ratio": 0.0}, "crop_ratio"),
        ({"model": "ADARecReleased", "mask_ratio": 1.5}, "mask_ratio"),
        ({"model": "ADARecReleased", "rec_loss": "bpr"}, "rec_loss"),
        ({"noise_schedule": "quadratic"}, "noise_schedule"),
        ({"n_diffusion_steps": 0}, "n_diffusion_steps"),
        ({"gumbel_temperature": 0.0}, "gumbel_temperature"),
        ({"use_router": "yes"}, "use_router"),
        ({"rec_loss": "bpr"}, "rec_loss"),
        ({"deno_weight": -1.0}, "deno_weight"),
        ({"n_prototypes": 0}, "n_prototypes"),
        ({"cl_temperature": 0}, "cl_temperature"),
        ({"n_heads": 3}, "n_heads"),
        ({"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}, "train_neg_sample_args"),
    ],
)
def test_invalid_settings_fail_in_config_naming_the_option(tiny_data, override, option):
    override = dict(override)
    model = override.pop("model", "ADARec")
    assert_config_error(model, tiny_config(tiny_data, **{**fast(model), **override}), option)


def test_defaults_follow_the_released_beauty_command(tiny_data):
    from recbole_diffusion.config import Config

    shared = {
        "train_mode": "sequence", "n_layers": 1, "n_heads": 2, "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5, "n_diffusion_steps": 50, "noise_schedule": "linear", "deno_weight": 1e-4,
        "expl_weight": 1e-4, "cont_weight": 0.1, "cluster_weight": 10.0, "n_prototypes": 256,
        "cl_temperature": 1.0, "learning_rate": 0.001, "train_batch_size": 256,
    }
    for model, expected in (
        ("ADARec", {**shared, "max_depth": 10, "rec_loss": "ce"}),
        ("ADARecReleased", {
            **shared, "expert_depths": [[4, 5], [9, 10]], "noised_rec_weight": 0.5, "instance_cl_weight": 0.1,
            "rec_loss": "bce", "crop_ratio": 0.2, "mask_ratio": 0.7, "reorder_ratio": 0.2,
        }),
    ):
        config = Config(model=model, config_dict={"data_path": tiny_data[0], "dataset": tiny_data[1]})
        assert {key: config[key] for key in expected} == expected, model


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("name, train_mode", [("ADARec", "sequence"), ("ADARecReleased", "sequence"), ("ADARec", "prefix")])
def test_quick_run_trains_and_evaluates(tiny_data, in_tmp_dir, one_thread, name, train_mode):
    from recbole_diffusion.quick_start import run

    result = run(
        model=name,
        config_dict=tiny_config(tiny_data, **fast(name), train_mode=train_mode, epochs=2),
        saved=True,
        verbose=False,
    )
    for split in ("best_valid_result", "test_result"):
        values = dict(result[split])
        assert set(values) >= {"hit@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert len(result["epoch_seconds"]) == 2


def test_checkpoints_of_the_single_class_restore_as_they_ran(tiny_data, tmp_path):
    """A checkpoint written when one ADARec class ran either method (``adarec_mode``) loads as the
    model it ran; DiffRec's earlier option names load as the new ones."""
    import json

    from conftest import train_saved
    from recbole_diffusion.compat import load_checkpoint
    from recbole_diffusion.config import stored_options
    from recbole_diffusion.quick_start import load_data_and_model

    result = train_saved("ADARecReleased", tiny_data, tmp_path, **fast("ADARecReleased"), epochs=1, expert_depths=[[2, 3]])
    checkpoint = load_checkpoint(result["saved_model_file"])
    stored = json.loads(checkpoint["config"])  # the options the run was given
    old = {k: v for k, v in stored.items() if k != "expert_depths"}
    old.update(model="ADARec", adarec_mode="released", released_depths=[[2, 3]], rec_loss=None)
    checkpoint["config"] = json.dumps(old)
    old_file = tmp_path / "old.pth"
    torch.save(checkpoint, old_file)
    config, model, _, _, _, test_data = load_data_and_model(str(old_file))
    assert type(model).__name__ == "ADARecReleased" and config["rec_loss"] == "bce"
    assert config["expert_depths"] == [[2, 3]]
    batch = next(iter(test_data))[0]
    _, again, _, _, _, _ = load_data_and_model(result["saved_model_file"])
    with torch.no_grad():
        torch.testing.assert_close(model.full_sort_predict(batch), again.full_sort_predict(batch))

    paper = stored_options({"model": "ADARec", "adarec_mode": "paper", "released_depths": [[4, 5]], "rec_loss": None})
    assert paper == {"model": "ADARec", "rec_loss": "ce"}
    diffrec = stored_options({"model": "DiffRec", "inference": "one_step", "n_inference_draws": 4, "inference_seed": 9})
    assert diffrec == {"model": "DiffRec", "n_sample_steps": 1, "n_sample_draws": 4, "sample_seed": 9}
    assert stored_options({"model": "DiffRec", "inference": "full_chain"})["n_sample_steps"] is None
