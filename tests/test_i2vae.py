"""i2VAE: the pseudo-sequence generator sees training data only, KL terms, cold-start routing,
config errors, and a quick run on a tiny two-domain dataset."""

import pytest
import torch

from test_cross_domain import cd_config, prepare, two_domain_sequences, write_two_domain_dataset
from test_dreamrec import one_thread  # noqa: F401  (the single-thread fixture)

FAST = {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_cross_heads": 2, "n_pseudo_items": 4, "psg_epochs": 3,
        "psg_embedding_size": 8, "psg_batch_size": 256, "train_batch_size": 64}


@pytest.fixture(scope="module")
def two_domain(tmp_path_factory):
    return write_two_domain_dataset(tmp_path_factory.mktemp("i2vae"))


def build(data, **overrides):
    from recbole_diffusion.quick_start import build_model

    config, dataset, train, valid, test = prepare(data, model="i2VAE", **{**FAST, **overrides})
    return config, dataset, build_model(config, train), train, test


def pseudo_tokens(dataset, model):
    """{(user token, domain): [pseudo-item tokens]}."""
    out = {}
    for user in range(1, dataset.user_num):
        for domain in range(2):
            items = [int(dataset.id2token("item_id", int(i))) for i in model.pseudo_items[user, domain] if int(i) > 0]
            out[(int(dataset.id2token("user_id", user)), domain)] = items
    return out


# ----------------------------------------------------------------------------- pseudo-sequence generator
def test_generator_output_does_not_change_with_valid_and_test_items(tmp_path, in_tmp_dir, one_thread):
    """Replace every valid and test item (user 1 keeps every item in its training part, so ids do not move)."""
    sequences = two_domain_sequences()
    changed = {}
    for user, per_domain in sequences.items():
        if user == 1:
            changed[user] = per_domain
            continue
        pools = (list(range(1, 31)), list(range(101, 131)))
        changed[user] = tuple(
            items[:-2] + [pools[d][(pools[d].index(i) + 11) % 30] for i in items[-2:]] for d, items in enumerate(per_domain)
        )
    _, dataset_a, model_a, _, _ = build(write_two_domain_dataset(tmp_path, "a", sequences))
    _, dataset_b, model_b, _, _ = build(write_two_domain_dataset(tmp_path, "b", changed))
    assert changed != sequences
    assert pseudo_tokens(dataset_a, model_a) == pseudo_tokens(dataset_b, model_b)

    # and the comparison can fail: a changed *training* item moves the output
    trained = dict(changed)
    user = next(u for u, (c, _) in sequences.items() if u > 1 and len(c) >= 5)
    cloth, sport = trained[user]
    trained[user] = ([cloth[0] % 30 + 1] + cloth[1:], sport)
    _, dataset_c, model_c, _, _ = build(write_two_domain_dataset(tmp_path, "c", trained))
    assert pseudo_tokens(dataset_c, model_c) != pseudo_tokens(dataset_b, model_b)


def test_pseudo_items_are_unseen_items_of_their_domain(two_domain, in_tmp_dir, one_thread):
    _, dataset, model, _, _ = build(two_domain)
    users, items, domains = dataset.train_interactions
    own = {}
    for u, i, d in zip(users, items, domains):
        own.setdefault(int(u), set()).add(int(i))
        assert model.domain_items[d, i]
    n_with = 0
    for user in range(1, dataset.user_num):
        for domain in range(2):
            pseudo = [int(i) for i in model.pseudo_items[user, domain] if int(i) > 0]
            if user not in own:
                assert not pseudo  # no training interactions: no pseudo-items
                continue
            assert not set(pseudo) & own[user]
            assert all(bool(model.domain_items[domain, i]) for i in pseudo)
            n_with += len(pseudo) == FAST["n_pseudo_items"]
    assert n_with > 0


# ----------------------------------------------------------------------------- variational terms
def test_gaussian_kl_is_zero_for_equal_distributions_and_matches_torch():
    from recbole_diffusion.layers import gaussian_kl

    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.allclose(gaussian_kl(mu, logvar, mu, logvar), torch.zeros(5), atol=1e-6)
    assert torch.allclose(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3), atol=1e-7)
    mu_p, logvar_p = torch.randn(5, 8), torch.randn(5, 8)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(mu_p, torch.exp(0.5 * logvar_p))
    torch.testing.assert_close(gaussian_kl(mu, logvar, mu_p, logvar_p), torch.distributions.kl_divergence(q, p).sum(-1))


def test_denoising_term_is_zero_when_augmented_and_real_posteriors_coincide(two_domain, in_tmp_dir, one_thread):
    """Without pseudo-items the augmented sequence is the real one: q(z_a | x_a) = q(z | x)."""
    _, _, model, train, _ = build(two_domain, n_pseudo_items=0)
    model.eval()  # no dropout
    batch = next(iter(train))
    with torch.no_grad():
        terms = model.loss_terms(batch)
    assert torch.allclose(terms["denoising"], torch.zeros_like(terms["denoising"]), atol=1e-5)
    assert terms["kl"].abs().sum() > 0 and terms["cross_domain"].abs().sum() > 0


def test_length_weight_is_the_authors(two_domain, in_tmp_dir):
    _, _, model, _, _ = build(two_domain, MAX_ITEM_LIST_LENGTH=10)
    weight = model.denoise_length_weight(torch.tensor([0, 5, 10, 30]))
    expected = torch.exp(0.8 * torch.tensor([0.0, 5.0, 10.0, 10.0]) / 10) - 0.8
    torch.testing.assert_close(weight, expected)


# ----------------------------------------------------------------------------- cold-start routing
def test_cold_start_users_use_the_single_domain_inference_network(two_domain, in_tmp_dir, one_thread):
    _, _, model, _, test = build(two_domain)
    model.eval()
    batch = next(iter(test))[0]
    cold = batch["domain_history_length"] == 0
    assert cold.any() and (~cold).any()
    with torch.no_grad():
        before = model.full_sort_predict(batch)
        for domain in range(2):
            model.transfer_priors[domain].out.bias.add_(1.0)  # r(z_t | other domain)
        after_r = model.full_sort_predict(batch)
        for domain in range(2):
            model.transfer_encoders[domain].out.bias.add_(1.0)  # q(z_t | both domains)
        after_q = model.full_sort_predict(batch)
    changed_r = ~torch.isclose(before, after_r).all(dim=1)
    changed_q = ~torch.isclose(after_r, after_q).all(dim=1)
    assert torch.equal(changed_r, cold)
    assert torch.equal(changed_q, ~cold)


# ----------------------------------------------------------------------------- config and a run
def test_needs_a_two_domain_dataset(tmp_path, in_tmp_dir):
    from recbole_diffusion.utils import ConfigError

    data = write_two_domain_dataset(tmp_path, "single", domain_column=False, only_domain=0)
    with pytest.raises(ConfigError, match="domain_field: i2VAE is a cross-domain model"):
        prepare(data, model="i2VAE", domain_field=None, domain_names=None, dataset_domain="cloth",
                load_col={"inter": ["user_id", "item_id", "timestamp"]})
    with pytest.raises(ConfigError, match="n_pseudo_items"):
        prepare(data, model="i2VAE", n_pseudo_items=-1)


def test_quick_run_reports_per_domain_groups(two_domain, in_tmp_dir, one_thread):
    from recbole_diffusion.quick_start import run

    result = run(model="i2VAE", config_dict=cd_config(two_domain, **FAST, epochs=2), saved=True, verbose=False)
    test = dict(result["test_result"])
    for name in ("cloth", "sport"):
        for group in ("all", "cold-start", "long-tailed"):
            assert test[f"users ({name}, {group})"] > 0
            assert 0.0 <= test[f"hit@10 ({name}, {group})"] <= 1.0
    assert len(result["epoch_seconds"]) == 2
