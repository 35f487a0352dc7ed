"""The diffusion math shared by the plugin's models: schedules, Gaussian diffusion, step embeddings,
and the drawing of training steps.

Step indices are 0-based everywhere (index t = diffusion step t + 1); see
:mod:`recbole_diffusion.diffusion.gaussian`.
"""

from recbole_diffusion.diffusion.embeddings import (
    SinusoidalStepEmbedding,
    sinusoidal_step_embedding,
)
from recbole_diffusion.diffusion.gaussian import (
    GaussianDiffusion,
    check_sampling_options,
    evaluation_generator,
    sample_steps_option,
    sampling_options,
)
from recbole_diffusion.diffusion.schedules import (
    SCHEDULES,
    alphas_cumprod_from_betas,
    betas_from_alphas_cumprod,
    make_betas,
)
from recbole_diffusion.diffusion.timesteps import StepImportanceSampler, uniform_steps

__all__ = [
    "SCHEDULES",
    "GaussianDiffusion",
    "SinusoidalStepEmbedding",
    "StepImportanceSampler",
    "alphas_cumprod_from_betas",
    "betas_from_alphas_cumprod",
    "check_sampling_options",
    "evaluation_generator",
    "make_betas",
    "sample_steps_option",
    "sampling_options",
    "sinusoidal_step_embedding",
    "uniform_steps",
]
