"""Samplers of a trained DDPM, one per file, each a :class:`Sampler` with ``timesteps`` and one ``step``.

They are registered in :data:`SAMPLERS` (a new sampler: one new file here plus its ``SAMPLERS.register`` line and the
import below).

Example:
    >>> SAMPLERS.names(), SAMPLERS.default
    (('ancestral', 'ddim'), 'ancestral')
"""

from pyroflows.diffusion.samplers.ancestral import AncestralSampler  # noqa: I001 - registers "ancestral" first
from pyroflows.diffusion.samplers.base import SAMPLERS, Sampler
from pyroflows.diffusion.samplers.ddim import DDIMSampler, ddim_timesteps

__all__ = ["SAMPLERS", "Sampler", "AncestralSampler", "DDIMSampler", "ddim_timesteps"]
