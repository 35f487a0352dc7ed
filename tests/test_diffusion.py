"""Closed-form checks of the shared diffusion module (schedules, posterior, samplers, embeddings).

Reference values are computed here from the papers' formulas with Python floats, independently of
the module's own buffers.
"""

import math

import pytest
import torch

from recbole_diffusion.diffusion import (
    SCHEDULES,
    GaussianDiffusion,
    SinusoidalStepEmbedding,
    alphas_cumprod_from_betas,
    betas_from_alphas_cumprod,
    make_betas,
    sinusoidal_step_embedding,
)


def _alpha_bars(betas):
    """ᾱ_1..ᾱ_N as Python floats, by an explicit running product."""
    out, running = [], 1.0
    for beta in betas.tolist():
        running *= 1.0 - beta
        out.append(running)
    return out


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("n_steps", [1, 2, 10, 1000])
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(schedule, n_steps):
    betas = make_betas(schedule, n_steps)
    assert betas.dtype == torch.float64 and betas.shape == (n_steps,)
    alphas_cumprod = alphas_cumprod_from_betas(betas)
    assert bool(((alphas_cumprod > 0) & (alphas_cumprod < 1)).all())
    assert bool((alphas_cumprod[1:] < alphas_cumprod[:-1]).all())


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_betas_round_trip_through_alphas_cumprod(schedule):
    betas = make_betas(schedule, 200)
    recovered = betas_from_alphas_cumprod(alphas_cumprod_from_betas(betas))
    torch.testing.assert_close(recovered, betas, rtol=1e-9, atol=1e-12)


def test_sqrt_schedule_matches_closed_form():
    n_steps = 1000
    alpha_bars = _alpha_bars(make_betas("sqrt", n_steps))
    for n in [1, 2, 10, 500, 999]:
        assert alpha_bars[n - 1] == pytest.approx(1.0 - math.sqrt(n / n_steps + 1e-4), rel=1e-10)
    # The closed form is negative at n = N; the clipped last β keeps ᾱ_N positive.
    assert make_betas("sqrt", n_steps)[-1].item() == pytest.approx(0.999)
    assert 0 < alpha_bars[-1] < alpha_bars[-2]


def test_linear_schedule_endpoints_and_spacing():
    betas = make_betas("linear", 1000)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)
    steps = betas[1:] - betas[:-1]
    torch.testing.assert_close(steps, torch.full_like(steps, (0.02 - 1e-4) / 999))
    custom = make_betas("linear", 50, beta_start=1e-3, beta_end=0.05)
    assert (custom[0].item(), custom[-1].item()) == pytest.approx((1e-3, 0.05))


def test_cosine_schedule_matches_closed_form():
    n_steps, s = 100, 0.008

    def g(n):
        return math.cos((n / n_steps + s) / (1 + s) * math.pi / 2) ** 2

    betas = make_betas("cosine", n_steps)
    alpha_bars = _alpha_bars(betas)
    for n in [1, 2, 30, 75, 99]:
        assert alpha_bars[n - 1] == pytest.approx(g(n) / g(0), rel=1e-10)
    # g(N) = 0 would make β_N = 1; Nichol & Dhariwal clip it to 0.999.
    assert betas.max().item() == pytest.approx(0.999)
    assert betas[-1].item() == pytest.approx(0.999)


@pytest.mark.parametrize("n_steps", [1, 7, 500])
def test_exp_schedule_matches_formula(n_steps):
    beta_min, beta_max = 0.1, 10.0
    betas = make_betas("exp", n_steps).tolist()
    for i in range(n_steps):
        x = 1.0 if n_steps == 1 else 1.0 + i * (2.0 * n_steps) / (n_steps - 1)
        exponent = -beta_min / n_steps - x * (beta_max - beta_min) / (2 * n_steps**2)
        expected = 1.0 - math.exp(exponent)
        assert betas[i] == pytest.approx(expected, rel=1e-10)


def test_invalid_schedule_name_raises_with_option_name():
    with pytest.raises(ValueError) as info:
        make_betas("quadratic", 10)
    message = str(info.value)
    assert "noise_schedule" in message
    for name in SCHEDULES:
        assert name in message


@pytest.mark.parametrize("n_steps", [0, -3, 2.5])
def test_invalid_number_of_steps_raises(n_steps):
    with pytest.raises(ValueError, match="n_diffusion_steps"):
        make_betas("linear", n_steps)
    with pytest.raises(ValueError, match="noise_schedule"):
        GaussianDiffusion.from_schedule("sqrt", n_steps)


# ----------------------------------------------------------------------------- buffers, posterior
def test_buffers_are_float32_and_not_persistent():
    diffusion = GaussianDiffusion.from_schedule("linear", 20)
    names = [
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
        "posterior_mean_coef1", "posterior_mean_coef2",
    ]
    for name in names:
        buffer = getattr(diffusion, name)
        assert buffer.dtype == torch.float32 and buffer.shape == (20,), name
    assert diffusion.state_dict() == {}
    assert diffusion.alphas_cumprod_prev[0].item() == 1.0
    torch.testing.assert_close(diffusion.alphas_cumprod_prev[1:], diffusion.alphas_cumprod[:-1])


@pytest.mark.parametrize("schedule", ["linear", "sqrt", "cosine", "exp"])
def test_posterior_is_bayes_product_of_the_two_gaussians(schedule):
    n_steps = 50
    betas64 = make_betas(schedule, n_steps)
    diffusion = GaussianDiffusion(betas64)
    alpha_bars = _alpha_bars(betas64)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, generator=generator)
    x_t = torch.randn(4, 3, generator=generator)
    for index in [1, 5, 20, 49]:
        beta = betas64[index].item()
        alpha = 1.0 - beta
        alpha_bar_prev = alpha_bars[index - 1]
        # As a function of x_{t-1}: q(x_t | x_{t-1}) ∝ N(x_{t-1}; x_t/sqrt(α), β/α), and
        # q(x_{t-1} | x_0) = N(sqrt(ᾱ_{t-1}) x_0, 1 - ᾱ_{t-1}). Multiply the two Gaussians.
        precision_step = alpha / beta
        precision_prior = 1.0 / (1.0 - alpha_bar_prev)
        variance = 1.0 / (precision_step + precision_prior)
        mean = variance * (
            precision_step * x_t.double() / math.sqrt(alpha)
            + precision_prior * math.sqrt(alpha_bar_prev) * x0.double()
        )
        t = torch.full((4,), index, dtype=torch.long)
        got_mean, got_variance, got_log_variance = diffusion.q_posterior(x0, x_t, t)
        torch.testing.assert_close(got_mean.double(), mean, rtol=1e-4, atol=1e-5)
        expected_variance = torch.full((4,), variance, dtype=torch.float64)
        torch.testing.assert_close(got_variance.double().flatten(), expected_variance,
                                   rtol=1e-4, atol=0)
        torch.testing.assert_close(got_log_variance.double().flatten(), expected_variance.log(),
                                   rtol=1e-5, atol=1e-5)


def test_posterior_at_index_zero_is_x0_without_variance():
    diffusion = GaussianDiffusion.from_schedule("sqrt", 30)
    x0, x_t = torch.randn(5, 2), torch.randn(5, 2)
    mean, variance, log_variance = diffusion.q_posterior(x0, x_t, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert bool((variance == 0).all()) and bool(torch.isfinite(log_variance).all())


def test_q_sample_empirical_moments():
    diffusion = GaussianDiffusion.from_schedule("linear", 100)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.tensor([1.5, -2.0, 0.5])
    n_draws = 40000
    for index in [3, 60]:
        t = torch.full((n_draws,), index, dtype=torch.long)
        draws = diffusion.q_sample(x0.expand(n_draws, 3), t, generator=generator)
        alpha_bar = _alpha_bars(make_betas("linear", 100))[index]
        torch.testing.assert_close(draws.mean(0), math.sqrt(alpha_bar) * x0, rtol=0, atol=0.02)
        torch.testing.assert_close(draws.var(0), torch.full((3,), 1.0 - alpha_bar),
                                   rtol=0.05, atol=2e-4)


def test_q_sample_broadcasts_per_sample_over_trailing_dims():
    diffusion = GaussianDiffusion.from_schedule("cosine", 40)
    alpha_bars = _alpha_bars(make_betas("cosine", 40))
    x0, noise = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    t = torch.tensor([0, 17, 39])
    x_t = diffusion.q_sample(x0, t, noise=noise)
    for row, index in enumerate(t.tolist()):
        alpha_bar = alpha_bars[index]
        expected = math.sqrt(alpha_bar) * x0[row] + math.sqrt(1 - alpha_bar) * noise[row]
        torch.testing.assert_close(x_t[row], expected)


def test_eps_and_x0_predictions_invert_q_sample():
    diffusion = GaussianDiffusion.from_schedule("sqrt", 100)
    x0, noise = torch.randn(6, 8), torch.randn(6, 8)
    t = torch.tensor([0, 1, 10, 50, 98, 99])
    x_t = diffusion.q_sample(x0, t, noise=noise)
    eps = diffusion.predict_eps_from_x0(x_t, t, x0)
    torch.testing.assert_close(eps, noise, rtol=1e-3, atol=1e-3)
    x0_back = diffusion.predict_x0_from_eps(x_t, t, noise)
    torch.testing.assert_close(x0_back, x0, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- samplers
def _toy_denoiser(x_t, t):
    # Depends on x_t and t so that every noise draw changes the result.
    return torch.tanh(x_t) * (1.0 + t.float()[:, None] / 100.0)


def test_sampling_is_reproducible_with_a_seeded_generator():
    diffusion = GaussianDiffusion.from_schedule("linear", 50)
    for n_sample_steps in [None, 10]:
        first = diffusion.sample(_toy_denoiser, (4, 6), n_sample_steps,
                                 generator=torch.Generator().manual_seed(7))
        second = diffusion.sample(_toy_denoiser, (4, 6), n_sample_steps,
                                  generator=torch.Generator().manual_seed(7))
        other = diffusion.sample(_toy_denoiser, (4, 6), n_sample_steps,
                                 generator=torch.Generator().manual_seed(8))
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        assert not torch.allclose(first, other)


def test_full_chain_follows_the_ancestral_posterior_step_by_step():
    n_steps, shape = 30, (3, 5)
    diffusion = GaussianDiffusion.from_schedule("exp", n_steps)
    result = diffusion.sample(_toy_denoiser, shape, generator=torch.Generator().manual_seed(3))

    # Rebuilt by hand: x_T first, then one draw per step except the last, posterior from Ho et al.
    generator = torch.Generator().manual_seed(3)
    betas = make_betas("exp", n_steps).tolist()
    alpha_bars = _alpha_bars(make_betas("exp", n_steps))
    x = torch.randn(shape, generator=generator).double()
    for index in reversed(range(n_steps)):
        x0 = _toy_denoiser(x.float(), torch.full((3,), index)).double()
        prev = alpha_bars[index - 1] if index > 0 else 1.0
        coef1 = betas[index] * math.sqrt(prev) / (1 - alpha_bars[index])
        coef2 = (1 - prev) * math.sqrt(1 - betas[index]) / (1 - alpha_bars[index])
        x = coef1 * x0 + coef2 * x
        if index > 0:
            variance = betas[index] * (1 - prev) / (1 - alpha_bars[index])
            x = x + math.sqrt(variance) * torch.randn(shape, generator=generator).double()
    torch.testing.assert_close(result.double(), x, rtol=1e-4, atol=1e-4)


def test_strided_with_all_steps_equals_the_full_chain():
    diffusion = GaussianDiffusion.from_schedule("cosine", 40)
    full = diffusion.sample(_toy_denoiser, (4, 3), generator=torch.Generator().manual_seed(5))
    strided = diffusion.sample(_toy_denoiser, (4, 3), n_sample_steps=40, eta=1.0,
                               generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(strided, full)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ddim_step_with_eta_one_equals_ancestral_step(schedule):
    # The identity that lets S = N strided sampling and the full chain share one path.
    diffusion = GaussianDiffusion.from_schedule(schedule, 25)
    x0, x_t, noise = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4)
    for index in range(25):
        ancestral = diffusion.p_sample_x0(x0, x_t, torch.full((2,), index), noise)
        ddim = diffusion.ddim_step(x0, x_t, index, index - 1, eta=1.0, noise=noise)
        torch.testing.assert_close(ddim, ancestral, rtol=1e-4, atol=1e-4)


def test_ddim_eta_one_is_the_posterior_of_the_respaced_chain():
    diffusion = GaussianDiffusion.from_schedule("sqrt", 100)
    alpha_bars = _alpha_bars(make_betas("sqrt", 100))
    x0, x_t = torch.randn(3, 4).double(), torch.randn(3, 4).double()
    for t, t_prev in [(99, 66), (66, 33), (40, 0)]:
        alpha_bar, alpha_bar_prev = alpha_bars[t], alpha_bars[t_prev]
        beta_respaced = 1.0 - alpha_bar / alpha_bar_prev
        precision_step = (1 - beta_respaced) / beta_respaced
        precision_prior = 1.0 / (1.0 - alpha_bar_prev)
        variance = 1.0 / (precision_step + precision_prior)
        mean = variance * (precision_step * x_t / math.sqrt(1 - beta_respaced)
                           + precision_prior * math.sqrt(alpha_bar_prev) * x0)
        zeros, ones = torch.zeros_like(x_t), torch.ones_like(x_t)
        got_mean = diffusion.ddim_step(x0, x_t, t, t_prev, eta=1.0, noise=zeros)
        got_sigma = diffusion.ddim_step(x0, x_t, t, t_prev, eta=1.0, noise=ones) - got_mean
        torch.testing.assert_close(got_mean, mean, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(got_sigma, torch.full_like(x_t, math.sqrt(variance)))
        # σ scales linearly with eta (Song et al. Eq. 16), and eta = 0 is deterministic DDIM.
        half = diffusion.ddim_step(x0, x_t, t, t_prev, eta=0.5, noise=ones)
        half_mean = diffusion.ddim_step(x0, x_t, t, t_prev, eta=0.5, noise=zeros)
        half_sigma = torch.full_like(x_t, 0.5 * math.sqrt(variance))
        torch.testing.assert_close(half - half_mean, half_sigma)
        eps = (x_t - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
        ddim = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1 - alpha_bar_prev) * eps
        deterministic = diffusion.ddim_step(x0, x_t, t, t_prev, eta=0.0, noise=ones)
        torch.testing.assert_close(deterministic, ddim)


def test_strided_sampling_calls_the_denoiser_once_per_step():
    diffusion = GaussianDiffusion.from_schedule("linear", 100)
    seen = []

    def counting_denoiser(x_t, t):
        seen.append(t.clone())
        return torch.zeros_like(x_t)

    diffusion.sample(counting_denoiser, (2, 3), n_sample_steps=7,
                     generator=torch.Generator().manual_seed(0))
    assert len(seen) == 7
    visited = [int(t[0]) for t in seen]
    assert visited == diffusion.strided_timesteps(7).tolist()
    assert visited[0] == 99 and visited[-1] == 0
    assert all(a > b for a, b in zip(visited, visited[1:]))
    assert all(bool((t == t[0]).all()) and t.dtype == torch.long and t.shape == (2,) for t in seen)
    assert diffusion.strided_timesteps(1).tolist() == [99]
    assert diffusion.strided_timesteps(100).tolist() == list(range(99, -1, -1))


@pytest.mark.parametrize("n_sample_steps,eta", [(None, 1.0), (12, 1.0), (12, 0.0), (1, 1.0),
                                                (60, 0.5)])
def test_a_perfect_denoiser_drives_the_chain_to_x0(n_sample_steps, eta):
    diffusion = GaussianDiffusion.from_schedule("sqrt", 60)
    target = torch.randn(4, 5)
    result = diffusion.sample(lambda x_t, t: target, (4, 5), n_sample_steps, eta=eta,
                              generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(result, target)


def test_eta_zero_is_deterministic_given_x_T():
    diffusion = GaussianDiffusion.from_schedule("linear", 50)
    x_T = torch.randn(3, 4)
    first = diffusion.sample(_toy_denoiser, None, 10, eta=0.0, x_T=x_T,
                             generator=torch.Generator().manual_seed(0))
    second = diffusion.sample(_toy_denoiser, None, 10, eta=0.0, x_T=x_T,
                              generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    _, trajectory = diffusion.sample(_toy_denoiser, None, 10, eta=0.0, x_T=x_T,
                                     return_trajectory=True)
    assert len(trajectory) == 11 and trajectory[0] is x_T


@pytest.mark.parametrize("n_sample_steps", [0, 51, -1])
def test_invalid_number_of_sample_steps_raises(n_sample_steps):
    diffusion = GaussianDiffusion.from_schedule("linear", 50)
    with pytest.raises(ValueError, match="n_sample_steps"):
        diffusion.strided_timesteps(n_sample_steps)
    with pytest.raises(ValueError, match="n_sample_steps"):
        diffusion.sample(_toy_denoiser, (2, 2), n_sample_steps)


# ----------------------------------------------------------------------------- step embeddings
def test_step_embedding_shape_and_values():
    t = torch.tensor([0, 1, 5, 999])
    embedding = sinusoidal_step_embedding(t, 16)
    assert embedding.shape == (4, 16)
    torch.testing.assert_close(embedding[0, :8], torch.zeros(8))
    torch.testing.assert_close(embedding[0, 8:], torch.ones(8))
    for j in [0, 3, 7]:
        angle = 5 / 10000 ** (j / 8)
        assert embedding[2, j].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert embedding[2, 8 + j].item() == pytest.approx(math.cos(angle), abs=1e-6)
    odd = sinusoidal_step_embedding(t, 9)
    assert odd.shape == (4, 9) and bool((odd[:, -1] == 0).all())
    torch.testing.assert_close(odd[:, :8], sinusoidal_step_embedding(t, 8))


def test_different_steps_give_different_embeddings():
    embedding = sinusoidal_step_embedding(torch.arange(200), 32)
    distances = torch.cdist(embedding, embedding)
    off_diagonal = distances[~torch.eye(200, dtype=torch.bool)]
    assert off_diagonal.min().item() > 1e-3


def test_step_embedding_module_with_mlp():
    plain = SinusoidalStepEmbedding(12)
    expected = sinusoidal_step_embedding(torch.arange(3), 12)
    torch.testing.assert_close(plain(torch.arange(3)), expected)
    assert not list(plain.parameters())
    with_mlp = SinusoidalStepEmbedding(12, mlp=True)
    output = with_mlp(torch.tensor([0, 4, 9]))
    assert output.shape == (3, 12)
    output.sum().backward()
    assert all(p.grad is not None for p in with_mlp.parameters())
    shapes = [tuple(p.shape) for p in with_mlp.parameters()]
    assert shapes == [(24, 12), (24,), (12, 24), (12,)]
