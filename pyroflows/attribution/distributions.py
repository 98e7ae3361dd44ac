r"""The bottleneck's distributions.

:class:`MaskedFeatureNormal` (the law of :math:`Z` over a whole feature map), its closed-form KL (registered with
:func:`torch.distributions.kl.register_kl`), and the autograd function that draws its vectorised noise copies.

Example:
    >>> import torch
    >>> from torch.distributions import kl_divergence
    >>> active = torch.ones(4, dtype=torch.bool)
    >>> p = MaskedFeatureNormal(torch.ones(2, 4), 1.0, active, 1)
    >>> q = MaskedFeatureNormal(torch.zeros(4), 1.0, active, 1)
    >>> kl_divergence(p, q.expand([2]))  # 4 units, each KL(N(1, 1) || N(0, 1)) = 1/2
    tensor([2., 2.])
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints, register_kl
from torch.distributions.utils import _standard_normal, broadcast_all

from pyroflows import distributed

__all__ = ["MaskedFeatureNormal", "SharedNoiseSample"]


class SharedNoiseSample(torch.autograd.Function):
    """``z[p, i] = loc[i] + eps[p, 0] * scale[i]`` for noise copies ``p`` and images ``i``.

    The same values as ``torch.addcmul(loc, eps, scale)``; the backward sums the gradient over the copies one copy
    at a time, instead of autograd's copy-sized product ``grad * eps`` followed by two reductions over the copies
    (memory-bound work on tensors ``batch_size`` times the feature maps' size).
    """

    @staticmethod
    def forward(ctx: Any, loc: torch.Tensor, scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        r"""The sample :math:`loc + eps \cdot scale`; ``eps`` is kept for the backward pass."""
        ctx.save_for_backward(eps)
        return torch.addcmul(loc, eps, scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        """Gradients of ``loc`` and ``scale``, summed over the noise copies that share them."""
        (eps,) = ctx.saved_tensors
        grad_loc = grad[0].clone() if ctx.needs_input_grad[0] else None
        grad_scale = grad[0] * eps[0] if ctx.needs_input_grad[1] else None
        for p in range(1, grad.shape[0]):
            if grad_loc is not None:
                grad_loc.add_(grad[p])
            if grad_scale is not None:
                grad_scale.addcmul_(grad[p], eps[p])
        return grad_loc, grad_scale, None


class MaskedFeatureNormal(TorchDistribution):
    r"""Independent Normals over a whole feature map (the event), counting only its active units.

    The same law as ``dist.Normal(loc, scale).mask(active).to_event(event_dim)`` (Pyro's composition): samples are
    ``loc + eps * scale``, and log-densities and KL divergences sum over the active units only. It exists for the
    bottleneck's :math:`Z` under vectorised particles, where Pyro expands both distributions over the noise copies:
    the KL between two of them is computed once per distinct parameter, masked and summed over the feature map
    *before* it is broadcast over the copies (the composition materialises, masks and sums it once per copy, which
    costs a small network's bottleneck as much as its tail).

    Args:
        loc: Means, ``[*batch, *feature]``.
        scale: Standard deviations, broadcastable to ``loc``.
        active: Boolean mask of the units that count, broadcastable to the feature map.
        event_dim: Number of rightmost dimensions forming the feature map.
        shared_noise: Draw the standard-normal noise once per noise copy and broadcast it over the images
            dimension (the one left of the feature map). Each image still sees independent noise across copies and
            steps; sharing it across images makes the random numbers an image receives independent of which other
            images share its batch, so a batch of images gives the same maps as one image at a time.

    Example:
        >>> from torch.distributions import kl_divergence
        >>> loc, scale = torch.randn(3, 2, 4), torch.rand(3, 2, 4) + 0.1
        >>> active = torch.tensor([True, False, True, True])
        >>> p = MaskedFeatureNormal(loc, scale, active, 2)
        >>> q = MaskedFeatureNormal(torch.zeros(2, 4), 1.0, active, 2).expand([3])
        >>> reference_p = dist.Normal(loc, scale).mask(active).to_event(2)
        >>> reference_q = dist.Normal(torch.zeros(2, 4), 1.0).mask(active).to_event(2).expand([3])
        >>> torch.allclose(kl_divergence(p, q), kl_divergence(reference_p, reference_q))
        True
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor | float,
        active: torch.Tensor,
        event_dim: int,
        shared_noise: bool = False,
        validate_args: Any = None,
    ) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        self._params = (self.loc, torch.as_tensor(scale, dtype=self.loc.dtype, device=self.loc.device))
        self.active = torch.as_tensor(active, dtype=torch.bool, device=self.loc.device)
        self.shared_noise = bool(shared_noise)
        shape = self.loc.shape
        split = len(shape) - int(event_dim)
        super().__init__(shape[:split], shape[split:], validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        """The real numbers over the event's dimensions."""
        return constraints.independent(constraints.real, self.event_dim)

    @property
    def mean(self) -> torch.Tensor:
        """The mean: ``loc``."""
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """The variance: ``scale ** 2``."""
        return self.scale.square()

    def expand(self, batch_shape: Any, _instance: Any = None) -> MaskedFeatureNormal:
        """The same distribution with a new batch shape (the mask and the noise sharing kept)."""
        new = self._get_checked_instance(MaskedFeatureNormal, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.loc, new.scale = self.loc.expand(shape), self.scale.expand(shape)
        new.active, new.shared_noise, new._params = self.active, self.shared_noise, self._params
        super(MaskedFeatureNormal, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(
        self,
        sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(),  # noqa: B008 (torch's signature)
    ) -> torch.Tensor:
        """Reparameterised draws (with ``shared_noise``, the images of one noise copy share its draw)."""
        shape = list(self._extended_shape(sample_shape))
        if self.shared_noise:
            axis = len(shape) - self.event_dim - 1
            if axis >= 0:
                shape[axis] = 1
            eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            if eps.ndim >= 4 and self.loc.stride(-3) == 1 and self.loc.shape[-3] > 1:
                # loc is channels_last: lay the same numbers out in its order, so the sample is channels_last too.
                eps = eps.movedim(-3, -1).contiguous().movedim(-1, -3)
            loc, scale = self._params
            if axis == 1 and loc.shape == scale.shape == self.loc.shape[1:]:  # copies x images x feature map
                return SharedNoiseSample.apply(loc, scale, eps)
        else:
            # Under a distributed global batch: the whole batch's noise, this rank's images (dim -event_dim-1).
            axis = len(shape) - self.event_dim - 1

            def draw(m: int) -> torch.Tensor:
                return _standard_normal(shape[:axis] + [m] + shape[axis + 1 :], dtype=self.loc.dtype,
                                        device=self.loc.device)  # fmt: skip

            if axis >= 0:
                eps = distributed.draw_rows(draw, shape[axis], dim=axis)
            else:
                eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return torch.addcmul(self.loc, eps, self.scale)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Normal log density of the active elements (inactive ones add 0), summed over the event."""
        if self._validate_args:
            self._validate_sample(value)
        log_prob = dist.Normal(self.loc, self.scale, validate_args=False).log_prob(value)
        log_prob = torch.where(self.active, log_prob, log_prob.new_zeros(()))
        return log_prob.sum(tuple(range(-self.event_dim, 0))) if self.event_dim else log_prob


@register_kl(MaskedFeatureNormal, MaskedFeatureNormal)
def _kl_masked_feature_normal(p: MaskedFeatureNormal, q: MaskedFeatureNormal) -> torch.Tensor:
    """Normal-Normal KL from the parameters as given (before any ``expand``), masked and summed, then broadcast.

    Reading the un-expanded parameters keeps the noise copies out of the forward *and* the backward pass (slicing
    an expanded tensor instead would send a zero-filled full-size gradient back through the slice).
    """
    if p.event_dim != q.event_dim:
        raise NotImplementedError("KL between feature-map Normals of different event ranks")
    event_dim = p.event_dim
    batch_shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    event_shape = torch.broadcast_shapes(p.event_shape, q.event_shape)
    params = (*p._params, *q._params)
    lead = torch.broadcast_shapes(*(t.shape[: max(t.ndim - event_dim, 0)] for t in params))
    p_loc, p_scale, q_loc, q_scale = (t.expand(lead + event_shape) for t in params)
    var_ratio = (p_scale / q_scale).square()
    t1 = ((p_loc - q_loc) / q_scale).square()
    kl = 0.5 * (var_ratio + t1 - 1 - var_ratio.log())
    active = p.active if p.active is q.active else p.active & q.active
    kl = torch.where(active, kl, kl.new_zeros(()))
    if event_dim:
        kl = kl.sum(tuple(range(-event_dim, 0)))
    return kl.expand(batch_shape)
