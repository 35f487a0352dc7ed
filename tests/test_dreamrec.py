"""DreamRec: guidance dropout, guided prediction, sampling, training modes, config checks, a run."""

import json
import math

import pytest
import torch

from conftest import assert_config_error, tiny_config


FAST = {"n_diffusion_steps": 20, "hidden_size": 16, "inner_size": 16}


def build(tiny_data, **overrides):
    """(config, model, train_data, valid_data) on the tiny dataset."""
    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = Config(model="DreamRec", config_dict=tiny_config(tiny_data, **{**FAST, **overrides}))
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    return config, build_model(config, train_data), train_data, valid_data


@pytest.fixture(scope="module")
def built(tiny_data):
    return build(tiny_data)


def first_valid_batch(valid_data):
    return next(iter(valid_data))[0]


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("prob", [0.1, 0.3])
def test_guidance_dropout_replaces_the_condition_at_the_configured_rate(tiny_data, prob):
    _, model, _, _ = build(tiny_data, unconditional_prob=prob)
    torch.manual_seed(0)
    n, d = 20000, model.hidden_size
    condition = torch.randn(n, d)
    seen = {}
    hook = model.denoiser[0].register_forward_pre_hook(lambda module, args: seen.setdefault("input", args[0]))
    try:
        model.diffusion_loss(condition, torch.randint(1, model.n_items, (n,)))
    finally:
        hook.remove()
    fed = seen["input"][:, d : 2 * d]
    is_null = torch.isclose(fed, model.null_embedding.detach().expand_as(fed)).all(dim=1)
    is_kept = torch.isclose(fed, condition).all(dim=1)
    assert bool((is_null ^ is_kept).all()), "every row is either the history's guidance or Φ"
    rate = is_null.float().mean().item()
    sd = math.sqrt(prob * (1 - prob) / n)
    assert abs(rate - prob) < 5 * sd, (rate, prob)


def test_loss_is_the_mse_on_x0_and_trains_the_null_embedding(built):
    _, model, train_data, _ = built
    model.train()
    batch = next(iter(train_data))
    model.zero_grad()
    loss = model.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.item_embedding.weight.grad.abs().sum() > 0
    assert model.denoiser[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_rounding_term_adds_the_cross_entropy_of_the_denoised_x0(tiny_data, monkeypatch, weight):
    import torch.nn.functional as F

    _, model, _, _ = build(tiny_data, rounding_loss_weight=weight, unconditional_prob=0.0, guidance_weight=0.0)
    model.eval()
    n, d = 12, model.hidden_size
    condition = torch.randn(n, d)
    items = torch.randint(1, model.n_items, (n,))
    t = torch.randint(0, model.n_diffusion_steps, (n,))
    noise = torch.randn(n, d)
    monkeypatch.setattr(model, "draw_training_noise", lambda k, device: (t, noise, torch.zeros(k, dtype=torch.bool)))
    loss = model.diffusion_loss(condition, items)
    x0 = model.item_embedding(items)
    predicted = model.denoise(model.diffusion.q_sample(x0, t, noise=noise), condition, t)
    expected = F.mse_loss(predicted, x0) + weight * F.cross_entropy(predicted @ model.item_embedding.weight.t(), items)
    assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)


def test_sequence_batch_loss_equals_prefix_batch_loss_over_the_same_targets(tiny_data):
    """Every window position j guides target j+1 exactly as RecBole's prefix sample of that target does.

    With MAX_ITEM_LIST_LENGTH above every user's train length, each user is one window and the
    windows' targets are exactly RecBole's train prefix samples. Noise, steps and guidance drops
    are fixed per target; dropout is off.
    """
    from recbole.data.interaction import Interaction

    _, model, train_data, _ = build(tiny_data, MAX_ITEM_LIST_LENGTH=50)
    model.eval()  # dropout off; calculate_loss does not depend on the mode otherwise
    n_windows = train_data.sample_size
    seq_batch = train_data.collate_fn(list(range(n_windows)))
    targets = seq_batch[model.TARGET_SEQ]
    valid = targets > 0
    users = seq_batch[model.USER_ID].unsqueeze(1).expand_as(targets)[valid]
    positions = torch.arange(targets.shape[1]).expand_as(targets)[valid]

    prefix = train_data._dataset.inter_feat  # RecBole's own prefix samples (history, length, target)
    row_of = {(int(u), int(n)): i for i, (u, n) in enumerate(zip(prefix[model.USER_ID], prefix[model.ITEM_SEQ_LEN]))}
    # window position j has a history of j + 1 items
    order = torch.tensor([row_of[(int(u), int(j) + 1)] for u, j in zip(users, positions)])
    assert len(order) == len(prefix), "the windows cover every prefix sample once"
    prefix_batch = Interaction({
        model.ITEM_SEQ: prefix[model.ITEM_SEQ][order],
        model.ITEM_SEQ_LEN: prefix[model.ITEM_SEQ_LEN][order],
        model.POS_ITEM_ID: prefix[model.POS_ITEM_ID][order],
    })
    assert torch.equal(prefix_batch[model.POS_ITEM_ID], targets[valid])
    assert prefix_batch[model.ITEM_SEQ].shape[1] > targets.shape[1]  # prefix rows are padded wider

    generator = torch.Generator().manual_seed(1)
    n = len(order)
    fixed = (
        torch.randint(0, model.n_diffusion_steps, (n,), generator=generator),
        torch.randn(n, model.hidden_size, generator=generator),
        torch.rand(n, generator=generator) < 0.3,
    )
    model.draw_training_noise = lambda n_targets, device: fixed
    with torch.no_grad():
        sequence_loss = model.calculate_loss(seq_batch)
        prefix_loss = model.calculate_loss(prefix_batch)
    torch.testing.assert_close(sequence_loss, prefix_loss, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- generation
def test_guided_prediction_is_the_classifier_free_mixture(tiny_data):
    _, model, _, _ = build(tiny_data, guidance_weight=3.0, denoiser="mlp2")
    model.eval()
    torch.manual_seed(0)
    x_t, condition = torch.randn(7, model.hidden_size), torch.randn(7, model.hidden_size)
    t = torch.randint(0, model.n_diffusion_steps, (7,))
    with torch.no_grad():
        conditional = model.denoise(x_t, condition, t)
        unconditional = model.denoise(x_t, model.null_embedding.expand_as(condition), t)
        guided = model.guided_x0(x_t, condition, t)
    torch.testing.assert_close(guided, 4.0 * conditional - 3.0 * unconditional)
    assert not torch.allclose(conditional, unconditional)


def test_evaluation_sampling_is_reproducible_with_a_seed(built):
    _, model, _, valid_data = built
    batch = first_valid_batch(valid_data)
    model.eval()
    with torch.no_grad():
        first = model.full_sort_predict(batch)
        again = model.full_sort_predict(batch)  # every scoring call draws from the seed again
        model.sample_seed += 1
        other_seed = model.full_sort_predict(batch)
    assert first.shape == (batch[model.ITEM_SEQ].shape[0], model.n_items)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other_seed)


def _algorithm_2(model, condition, seed):
    """The paper's generation loop written out (Eq. 15-16) with the same draw order."""
    generator = torch.Generator().manual_seed(seed)
    steps = model.n_diffusion_steps
    alpha_bar = torch.cumprod(1 - model.diffusion.betas.double(), 0)
    x = torch.randn(condition.shape, generator=generator)
    for t in reversed(range(steps)):
        guided = model.guided_x0(x, condition, torch.full((x.shape[0],), t))
        beta = model.diffusion.betas[t].double().item()
        abar, abar_prev = alpha_bar[t].item(), (alpha_bar[t - 1].item() if t else 1.0)
        mean = (abar_prev**0.5 * beta / (1 - abar)) * guided + ((1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar)) * x
        if t:
            x = mean + ((1 - abar_prev) / (1 - abar) * beta) ** 0.5 * torch.randn(x.shape, generator=generator)
        else:
            x = mean
    return x


def test_strided_sampling_with_all_steps_is_the_full_chain(tiny_data):
    steps = FAST["n_diffusion_steps"]
    _, full, _, valid_data = build(tiny_data, n_sample_steps=None)
    _, strided, _, _ = build(tiny_data, n_sample_steps=steps)
    _, fewer, _, _ = build(tiny_data, n_sample_steps=steps // 4)
    strided.load_state_dict(full.state_dict())
    fewer.load_state_dict(full.state_dict())
    batch = first_valid_batch(valid_data)
    scores = []
    for model in (full, strided, fewer):
        model.eval()
        with torch.no_grad():
            scores.append(model.full_sort_predict(batch))
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=0)
    assert not torch.allclose(scores[0], scores[2])
    assert torch.isfinite(scores[2]).all()
    with torch.no_grad():
        condition = full.forward(batch[full.ITEM_SEQ], batch[full.ITEM_SEQ_LEN])
        oracle = full.generate(condition, generator=torch.Generator().manual_seed(7))
        reference = _algorithm_2(full, condition, seed=7)
    torch.testing.assert_close(oracle, reference, rtol=1e-4, atol=1e-4)


def test_sampled_evaluation_scores_a_users_candidates_against_one_oracle(built):
    from recbole.data.interaction import Interaction

    _, model, _, valid_data = built
    batch = first_valid_batch(valid_data)
    rows = torch.arange(3).repeat_interleave(4)  # three users, four candidates each
    candidates = torch.randint(1, model.n_items, (12,))
    interaction = Interaction({
        model.ITEM_SEQ: batch[model.ITEM_SEQ][rows],
        model.ITEM_SEQ_LEN: batch[model.ITEM_SEQ_LEN][rows],
        model.ITEM_ID: candidates,
    })
    histories, inverse = torch.unique(batch[model.ITEM_SEQ][:3], dim=0, return_inverse=True)
    assert len(histories) == 3
    model.eval()
    with torch.no_grad():
        scores = model.predict(interaction)
        model.eval()  # same seed: full ranking of the three distinct histories, in unique order
        full = model.full_sort_predict(Interaction({
            model.ITEM_SEQ: histories, model.ITEM_SEQ_LEN: (histories > 0).sum(dim=1)}))
    torch.testing.assert_close(scores, full[inverse[rows], candidates])


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "override, option",
    [
        ({"n_diffusion_steps": 0}, "n_diffusion_steps"),
        ({"n_sample_steps": 21}, "n_sample_steps"),
        ({"n_sample_steps": 0}, "n_sample_steps"),
        ({"guidance_weight": -1.0}, "guidance_weight"),
        ({"unconditional_prob": 1.0}, "unconditional_prob"),
        ({"unconditional_prob": -0.1}, "unconditional_prob"),
        ({"unconditional_prob": 0.0, "guidance_weight": 2.0}, "unconditional_prob"),
        ({"noise_schedule": "quadratic"}, "noise_schedule"),
        ({"denoiser": "mlp3"}, "denoiser"),
        ({"sample_eta": 1.5}, "sample_eta"),
        ({"embedding_init_std": 0.0}, "embedding_init_std"),
        ({"n_heads": 3}, "n_heads"),
        ({"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}, "train_neg_sample_args"),
    ],
)
def test_invalid_settings_fail_in_config_naming_the_option(tiny_data, override, option):
    assert_config_error("DreamRec", tiny_config(tiny_data, **{**FAST, **override}), option)


def test_defaults_follow_the_spec(tiny_data):
    from recbole_diffusion.config import Config

    config = Config(model="DreamRec", config_dict={"data_path": tiny_data[0], "dataset": tiny_data[1]})
    expected = {
        "hidden_size": 64, "hidden_dropout_prob": 0.1, "unconditional_prob": 0.1, "learner": "adamw",
        "weight_decay": 0.0, "embedding_init_std": 1.0, "train_mode": "sequence", "denoiser": "mlp1",
        "n_diffusion_steps": 500, "noise_schedule": "exp", "guidance_weight": 2.0, "n_sample_steps": None,
        "sample_eta": 1.0, "train_batch_size": 256,
    }
    assert {key: config[key] for key in expected} == expected
    assert config["train_neg_sample_args"]["distribution"] == "none"


# ----------------------------------------------------------------------------- a given item table
def save_item_table(path, weight, dataset):
    """A checkpoint as this plugin's Trainer writes one, holding only an item table."""
    from recbole_diffusion.trainer import atomic_torch_save

    atomic_torch_save({"config": json.dumps({"model": "SASRec", "dataset": dataset}), "state_dict": {"item_embedding.weight": weight}}, str(path))
    return str(path)


def test_item_table_loads_from_a_checkpoint_and_stays_fixed_when_frozen(tiny_data, tmp_path, one_thread):
    _, reference, train_data, _ = build(tiny_data)
    table = torch.randn_like(reference.item_embedding.weight) * 0.3
    path = save_item_table(tmp_path / "sasrec.pth", table, tiny_data[1])
    _, model, train_data, _ = build(tiny_data, item_embedding_checkpoint=path, freeze_item_embedding=True)
    assert torch.equal(model.item_embedding.weight, table)
    assert not model.item_embedding.weight.requires_grad
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for batch in list(train_data)[:2]:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    assert torch.equal(model.item_embedding.weight, table)  # frozen: the MSE cannot shrink it
    assert not torch.equal(model.null_embedding, before["null_embedding"])  # the rest trains
    _, unfrozen, _, _ = build(tiny_data, item_embedding_checkpoint=path)
    assert unfrozen.item_embedding.weight.requires_grad


def test_item_table_checkpoint_of_another_dataset_or_width_is_refused(tiny_data, tmp_path):
    from recbole_diffusion.errors import ConfigError

    _, reference, _, _ = build(tiny_data)
    weight = reference.item_embedding.weight.detach()
    other = save_item_table(tmp_path / "other.pth", weight, "another-dataset")
    with pytest.raises(ConfigError, match="item_embedding_checkpoint: .* was trained on 'another-dataset'"):
        build(tiny_data, item_embedding_checkpoint=other)
    narrow = save_item_table(tmp_path / "narrow.pth", weight[:, :8].clone(), tiny_data[1])
    with pytest.raises(ConfigError, match="item_embedding_checkpoint: .* shape"):
        build(tiny_data, item_embedding_checkpoint=narrow)
    assert_config_error("DreamRec", tiny_config(tiny_data, **FAST, item_embedding_checkpoint=str(tmp_path / "missing.pth")), "item_embedding_checkpoint")


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("mode", ["sequence", "prefix"])
def test_quick_run_trains_and_evaluates(tiny_data, in_tmp_dir, one_thread, mode):
    from recbole_diffusion.quick_start import run

    result = run(
        model="DreamRec",
        config_dict=tiny_config(tiny_data, **FAST, train_mode=mode, epochs=2, n_sample_steps=5),
        saved=True,
        verbose=False,
    )
    for split in ("best_valid_result", "test_result"):
        values = dict(result[split])
        assert set(values) >= {"hit@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
    assert len(result["epoch_seconds"]) == 2



def test_learns_a_deterministic_next_item_rule(tmp_path, in_tmp_dir, one_thread):
    """Synthetic sequences that walk a cycle of 40 items: the next item is a function of the last.

    Chance is hit@10 = 0.25; the guided generation must find the next item far more often.
    """
    from recbole_diffusion.quick_start import run

    n_items, n_users, per_user = 40, 150, 12
    generator = torch.Generator().manual_seed(0)
    folder = tmp_path / "cycle"
    folder.mkdir()
    with open(folder / "cycle.inter", "w", encoding="utf-8") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(1, n_users + 1):
            start = int(torch.randint(0, n_items, (1,), generator=generator))
            for step in range(per_user):
                out.write(f"{user}\t{(start + step) % n_items + 1}\t{step}\n")
    config = {
        "data_path": str(tmp_path), "dataset": "cycle", "epochs": 10, "eval_step": 10, "show_progress": False,
        "gpu_id": "", "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 10,
        "n_diffusion_steps": 20, "hidden_size": 32, "inner_size": 32, "learning_rate": 0.005,
    }
    result = run(model="DreamRec", config_dict=config, saved=False, verbose=False)
    assert dict(result["test_result"])["hit@10"] > 0.6, dict(result["test_result"])
