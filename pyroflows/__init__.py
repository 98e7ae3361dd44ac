"""pyroflows: compact-support flows, DDPM diffusion and Information Bottleneck Attribution for Pyro.

Sub-packages (imported on demand, so ``import pyroflows`` stays cheap and changes no global state):

- :mod:`pyroflows.flows`: bounded-support normalizing flows (``CompactFlow``, ``SegmentFlow``, ``fit``).
- :mod:`pyroflows.diffusion`: DDPM as a Gaussian Markov chain of Pyro modules.
- :mod:`pyroflows.attribution`: per-sample and readout Information Bottleneck Attribution.
- :mod:`pyroflows.evaluation`: the attribution evaluation protocol (degradation, Sensitivity-N, ...).
- :mod:`pyroflows.datasets`: built-in data generators.

Example:
    >>> import pyroflows
    >>> pyroflows.__version__
    '0.1.0'
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
