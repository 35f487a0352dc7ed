"""i2VAE: the pseudo-sequence generator sees training data only, KL terms, cold-start routing,
config errors, and a quick run on a tiny two-domain dataset."""

import pytest
import torch

from test_cross_domain import cd_config, prepare, two_domain_sequences, write_two_domain_dataset

FAST = {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_cross_heads": 2, "n_pseudo_items": 4, "psg_epochs": 3,
        "psg_embedding_size": 8, "psg_batch_size": 256, "train_batch_size": 64}


@pytest.fixture(scope="module")
def two_domain(tmp_path_factory):
    return write_two_domain_dataset(tmp_path_factory.mktemp("i2vae"))


def build(data, **overrides):
    """The model built and its pseudo-items fitted, as i2VAETrainer does before training."""
    from recbole_diffusion.quick_start import build_model

    config, dataset, train, valid, test = prepare(data, model="i2VAE", **{**FAST, **overrides})
    model = build_model(config, train)
    model.fit_pseudo_sequences()
    return config, dataset, model, train, test


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
    from recbole_diffusion.errors import ConfigError

    data = write_two_domain_dataset(tmp_path, "single", domain_column=False, only_domain=0)
    with pytest.raises(ConfigError, match="domain_field: i2VAE is a cross-domain model"):
        prepare(data, model="i2VAE", domain_field=None, domain_names=None, dataset_domain="cloth",
                load_col={"inter": ["user_id", "item_id", "timestamp"]})


@pytest.mark.parametrize("option, value, message", [
    ("n_pseudo_items", -1, "n_pseudo_items: must be an integer >= 0; got -1"),
    ("psg_batch_size", 0, "psg_batch_size: must be an integer >= 1; got 0"),
    ("kl_weight", -0.1, "kl_weight: must be a number in [0.0, inf]; got -0.1"),
    ("input_dropout_prob", 1.0, "input_dropout_prob: must be a number in [0.0, 1.0); got 1.0"),
    ("psg_learning_rate", 0, "psg_learning_rate: must be a number in (0.0, inf]; got 0"),
    ("posterior_scale", "cdrib", "posterior_scale: must be one of clamped, authors (clamped: "),
    ("n_cross_heads", 3, "n_cross_heads: must divide hidden_size"),
])
def test_impossible_settings_are_refused_naming_the_option(tmp_path, in_tmp_dir, option, value, message):
    from recbole_diffusion.errors import ConfigError

    data = write_two_domain_dataset(tmp_path, "pair")
    with pytest.raises(ConfigError) as info:
        prepare(data, model="i2VAE", **{option: value})
    assert str(info.value).startswith(message), str(info.value)


def test_defaults(two_domain, in_tmp_dir):
    """The authors' weights, except β (0.001: the authors' 1 collapses the posterior, see the NOTE)."""
    from recbole_diffusion.config import Config

    config = Config(model="i2VAE", config_dict={k: v for k, v in cd_config(two_domain).items() if k not in FAST})
    expected = {"kl_weight": 0.001, "denoise_weight": 0.005, "cross_domain_weight": 0.001, "learning_rate": 0.0008,
                "train_batch_size": 512, "n_pseudo_items": 20, "hidden_size": 128, "train_mode": "prefix"}
    assert {key: config[key] for key in expected} == expected


def test_quick_run_reports_per_domain_groups(two_domain, in_tmp_dir, one_thread):
    from recbole_diffusion.quick_start import run

    result = run(model="i2VAE", config_dict=cd_config(two_domain, **FAST, epochs=2), saved=True, verbose=False)
    test = dict(result["test_result"])
    for name in ("cloth", "sport"):
        for group in ("all", "cold-start", "long-tailed"):
            assert test[f"users ({name}, {group})"] > 0
            assert 0.0 <= test[f"hit@10 ({name}, {group})"] <= 1.0
    assert len(result["epoch_seconds"]) == 2


# ----------------------------------------------------------------------------- posterior scale (issue 8 follow-up)
def set_raw_scale_bias(model, value):
    """Every Gaussian head's raw scale output (second half of ``out``) shifted to ``value``."""
    from recbole_diffusion.layers import GaussianEncoder

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GaussianEncoder):
                module.out.bias[module.out.out_features // 2 :] = value


def test_bounded_log_variance_is_the_authors_sigma():
    from recbole_diffusion.layers import bounded_log_variance

    raw = torch.tensor([-1e4, -3.0, 0.0, 0.4, 5.0])
    sigma = torch.exp(0.1 + 0.9 * torch.nn.functional.softplus(raw.clamp(max=0.4)))
    torch.testing.assert_close(bounded_log_variance(raw), 2 * sigma.log())
    assert bounded_log_variance(raw).min() >= 0.2 - 1e-6  # σ >= exp(0.1)


def test_narrow_posteriors_keep_the_regularizers_bounded(two_domain, in_tmp_dir, one_thread):
    """posterior_scale=authors, heads pushed to their narrowest (raw scale -100): log σ² stays at the floor 2·0.1, and the
    KL between two posteriors (denoising, cross-domain) grows by the variance ratio of the floor
    (< 10x), not by e^10 as with the former log σ² clamp at -10."""
    _, _, model, train, _ = build(two_domain, posterior_scale="authors")
    model.eval()  # no dropout, z = μ
    batch = next(iter(train))
    terms = {}
    for raw in (0.0, -100.0):
        set_raw_scale_bias(model, raw)
        with torch.no_grad():
            terms[raw] = model.loss_terms(batch)
            for domain, _, latents in model.domain_parts(batch):
                for key in ("specific", "augmented", "transfer", "transfer_prior"):
                    assert latents[key][1].min() >= 0.2 - 1e-5, (raw, domain, key)
    for name in ("denoising", "cross_domain"):
        normal, narrow = terms[0.0][name].sum(), terms[-100.0][name].sum()
        assert normal > 0, name
        assert narrow < 10 * normal, (name, float(narrow), float(normal))
        assert torch.isfinite(terms[-100.0][name]).all()


def test_learnable_prior_of_specific_latents(two_domain, in_tmp_dir, one_thread):
    """The authors' prior N(μ_p, σ(r_p)) per domain: μ_p learns; r_p = 1 sits above the clamp at
    0.4 and, as in their code, gets no gradient. The default (clamped) has N(0, I) priors and no such parameters."""
    _, _, clamped, _, _ = build(two_domain)
    assert not hasattr(clamped, "prior_mu")
    _, _, model, train, _ = build(two_domain, posterior_scale="authors")
    model.train()
    model.calculate_loss(next(iter(train))).backward()
    assert (model.prior_mu.grad.abs() > 0).all()
    assert torch.equal(model.prior_raw_log_sigma.grad, torch.zeros(2))
    model.eval()
    batch = next(iter(train))
    with torch.no_grad():
        kl_a = model.loss_terms(batch)["kl"]
        model.prior_mu.add_(0.5)
        kl_b = model.loss_terms(batch)["kl"]
    assert not torch.allclose(kl_a, kl_b)


# ----------------------------------------------------------------------------- length-bucketed encoding
def test_bucketed_encoding_equals_encoding_each_row_alone(two_domain, in_tmp_dir, one_thread):
    """Rows are encoded in groups of similar length cut to their own width; each row's states at
    its real positions must equal those of the row encoded alone, and empty rows give 0."""
    _, _, model, train, _ = build(two_domain, MAX_ITEM_LIST_LENGTH=10)
    model.eval()
    batch = next(iter(train))
    for domain in range(2):
        seq = batch[model.DOMAIN_SEQ[domain]]
        seq = torch.cat([seq, torch.zeros(2, seq.size(1), dtype=seq.dtype)])  # two empty rows
        lengths = (seq > 0).sum(1)
        assert len(set(lengths.tolist())) > 3  # several groups, several widths
        with torch.no_grad():
            states, mask, mean = model.encode_sequence(domain, seq)
            for row in range(len(seq)):
                n = int(lengths[row])
                if n == 0:
                    assert torch.equal(mean[row], torch.zeros_like(mean[row]))
                    continue
                alone, _, alone_mean = model.encode_sequence(domain, seq[row : row + 1, :n])
                torch.testing.assert_close(states[row, :n], alone[0], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(mean[row], alone_mean[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(mask, (seq > 0)[:, : mask.size(1)])


def test_restoring_a_checkpoint_fits_nothing(two_domain, in_tmp_dir, one_thread, monkeypatch):
    """Training fits the pseudo-sequence generator once; load_data_and_model restores its items
    from the checkpoint without fitting it again, and the restored model scores as the trained one."""
    from recbole.model.general_recommender.lightgcn import LightGCN

    from recbole_diffusion.model.sequential_recommender import i2vae
    from recbole_diffusion.quick_start import load_data_and_model, run

    fits = []
    original = i2vae.fit_pseudo_items
    monkeypatch.setattr(i2vae, "fit_pseudo_items", lambda *args: fits.append(1) or original(*args))
    built = []
    original_init = LightGCN.__init__
    monkeypatch.setattr(LightGCN, "__init__", lambda self, *args: built.append(1) or original_init(self, *args))
    config = cd_config(two_domain, "i2VAE", **FAST, eval_step=1)
    result = run(model="i2VAE", config_dict=config, saved=True, verbose=False, return_trainer=True)
    assert len(fits) == 1 and len(built) == 1
    _, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    assert len(fits) == 1 and len(built) == 1  # nothing fitted, no LightGCN built
    assert bool(model.pseudo_items_fitted)
    assert torch.equal(model.pseudo_items, result["trainer"].model.pseudo_items)


def test_an_unfitted_model_refuses_to_score(two_domain, in_tmp_dir, one_thread):
    from recbole_diffusion.quick_start import build_model

    config, _, train, _, test = prepare(two_domain, model="i2VAE", **FAST)
    model = build_model(config, train)
    batch = next(iter(test))[0]
    with pytest.raises(RuntimeError, match="fit_pseudo_sequences"):
        model.full_sort_predict(batch)


def test_fitting_the_pseudo_items_leaves_every_gpu_stream_alone(two_domain, monkeypatch):
    """torch.manual_seed also reseeds every GPU's stream, which fork_rng(devices=[]) does not restore:
    under multi-GPU DDP every rank would then share one GPU stream. The fit seeds the CPU stream only."""
    from recbole_diffusion.quick_start import build_model

    config, dataset, train, valid, test = prepare(two_domain, model="i2VAE", **FAST)
    model = build_model(config, train)
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(seed))
    before = torch.get_rng_state()
    model.fit_pseudo_sequences()
    assert reseeded == []
    assert torch.equal(torch.get_rng_state(), before)  # the CPU stream is given back as it was


def test_under_distributed_only_the_first_process_fits_the_pseudo_items(two_domain, monkeypatch):
    """Every other rank receives rank 0's items instead of fitting the same ones again on the CPU."""
    from recbole_diffusion.model.sequential_recommender import i2vae as module
    from recbole_diffusion.quick_start import build_model

    config, dataset, train, valid, test = prepare(two_domain, model="i2VAE", **FAST)
    model = build_model(config, train)
    sent = torch.randint(1, model.n_items, model.pseudo_items.shape)
    fits = []
    monkeypatch.setattr(module, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(module, "broadcast_object", lambda value: (sent, None))
    monkeypatch.setattr(module, "fit_pseudo_items", lambda *args: fits.append(args))
    model.fit_pseudo_sequences()
    assert fits == [] and torch.equal(model.pseudo_items, sent) and bool(model.pseudo_items_fitted)


def test_under_distributed_a_failed_fit_on_the_first_process_stops_every_rank(two_domain, monkeypatch):
    """Rank 0 sends its error instead of the items: the other ranks raise it instead of waiting."""
    from recbole_diffusion.model.sequential_recommender import i2vae as module
    from recbole_diffusion.quick_start import build_model

    config, dataset, train, valid, test = prepare(two_domain, model="i2VAE", **FAST)
    model = build_model(config, train)
    sent = []

    def fail(*args):
        raise MemoryError("no room")

    monkeypatch.setattr(module, "is_distributed", lambda: True)
    monkeypatch.setattr(module, "broadcast_object", lambda value: sent.append(value) or value)
    monkeypatch.setattr(module, "fit_pseudo_items", fail)
    with pytest.raises(RuntimeError, match="failed on rank 0: MemoryError: no room"):
        model.fit_pseudo_sequences()
    assert sent == [(None, "MemoryError: no room")]
