"""DDPM diffusion as a Pyro model.

Schedules, the forward process in closed form, the reverse process as a ``pyro.markov`` chain trained with SVI,
ancestral and DDIM samplers (class-conditional with classifier-free guidance), imputation of missing entries by
sequential Monte Carlo over the chain, metrics and plots.

The extensible families are registries (:class:`pyroflows.registry.Registry`): :data:`SCHEDULES`, :data:`NETWORKS`,
:data:`SAMPLERS` and :data:`IMPUTATION_METHODS`; the CLI's choices and help read them.

Example:
    >>> import torch
    >>> from pyroflows.diffusion import DDPM, train, sample
    >>> ddpm = DDPM(data_dim=2, steps=10)
    >>> _ = train(ddpm, torch.randn(100, 2), epochs=2, progress=False)
    >>> sample(ddpm, 3).shape
    torch.Size([3, 2])
"""

from pyroflows.diffusion.ddpm import DDPM, REVERSE_VARIANCES, NLLEstimate
from pyroflows.diffusion.demo import DEFAULT_POINTS, run_demo
from pyroflows.diffusion.forward import (
    add_noise,
    forward_marginal,
    forward_posterior,
    posterior_mean,
    posterior_variance,
)
from pyroflows.diffusion.imputation import IMPUTATION_METHODS, TWISTS, TwistedSMC, impute, systematic_resample
from pyroflows.diffusion.metrics import QualityRatio, energy_distance, energy_distance_ratio, noise_floor
from pyroflows.diffusion.networks import (
    NETWORKS,
    MLPNoisePredictor,
    PostNoisePredictor,
    SinusoidalEmbedding,
    make_network,
)
from pyroflows.diffusion.plots import plot_samples, plot_vector_field
from pyroflows.diffusion.samplers import AncestralSampler, DDIMSampler, Sampler
from pyroflows.diffusion.sampling import SAMPLERS, ancestral_sample, ddim_sample, ddim_timesteps, sample
from pyroflows.diffusion.scaler import MinMaxScaler
from pyroflows.diffusion.schedules import (
    SCHEDULES,
    CosineSchedule,
    LinearSchedule,
    PolynomialSchedule,
    Schedule,
    make_schedule,
    plot_schedules,
)
from pyroflows.diffusion.training import LOSSES, train

__all__ = [
    "DDPM",
    "NLLEstimate",
    "REVERSE_VARIANCES",
    "Schedule",
    "LinearSchedule",
    "PolynomialSchedule",
    "CosineSchedule",
    "SCHEDULES",
    "make_schedule",
    "plot_schedules",
    "forward_marginal",
    "forward_posterior",
    "add_noise",
    "posterior_mean",
    "posterior_variance",
    "MinMaxScaler",
    "MLPNoisePredictor",
    "PostNoisePredictor",
    "SinusoidalEmbedding",
    "make_network",
    "NETWORKS",
    "train",
    "LOSSES",
    "ancestral_sample",
    "ddim_sample",
    "ddim_timesteps",
    "sample",
    "SAMPLERS",
    "Sampler",
    "AncestralSampler",
    "DDIMSampler",
    "impute",
    "IMPUTATION_METHODS",
    "TWISTS",
    "TwistedSMC",
    "systematic_resample",
    "energy_distance",
    "energy_distance_ratio",
    "noise_floor",
    "QualityRatio",
    "plot_vector_field",
    "plot_samples",
    "run_demo",
    "DEFAULT_POINTS",
]
