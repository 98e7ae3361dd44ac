r"""A monotone rational spline over the whole unit interval, applied in logit space.

Pyro's :class:`~pyro.distributions.transforms.Spline` reshapes :math:`[-B, B]` and is the identity outside, so in
logit space it only reaches the middle of the distribution. Here the spline acts on :math:`u = \sigma(x)`, which
runs over the whole interval, and the result is mapped back to logit space:

.. math:: y = \operatorname{logit}\big(\tfrac{1}{2}(1 + S(2\sigma(x) - 1))\big),

with :math:`S` Pyro's rational spline on :math:`[-1, 1]`. Composed with a Logistic base and the squash, this is a
spline density on the whole interval (bins placed in the data's own coordinates), while the layers before it in logit
space still decide the power-law behaviour at the bounds (:math:`S` has slope about 1 at :math:`\pm 1`).

Pyro's spline fixes :math:`S'(\pm 1) = 0.999`, which ties the density's values at the two bounds to each other
(through the layers before it). With ``ends="free"`` or ``ends="secant"`` the spline is a rational-quadratic one
whose end derivatives :math:`S'(-1)` and :math:`S'(1)` are set separately, so the density at each bound is its own:
:math:`p(low) \propto 1 / S'(-1)` and :math:`p(high) \propto 1 / S'(1)` for a Logistic base. ``"free"`` learns
them; ``"secant"`` sets each to the secant slope :math:`h/w` of the end bin, so the density at a bound is the end
bin's mean density, estimated from all the points in that bin rather than from the few right at the bound.
Per-bound ends (one ``(lower, upper)`` pair of ``"free"`` / ``"secant"`` per dimension) mix the two: a free
parameter for every end, of which only the free ends' are used (so the parameters are the same whichever ends a fit
chooses, and :meth:`SigmoidSpline.set_bound_ends` can change the choice in place).
| Neural Spline Flows (Durkan et al., 2019); Invertible Generative Modeling using Linear Rational Splines
(Dolatabadi et al., 2020)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import Spline
from torch import nn
from torch.distributions import constraints

from pyroflows.errors import DataError

__all__ = ["SigmoidSpline", "sigmoid_spline", "rational_quadratic_spline", "check_bound_ends"]

_MIN_WIDTH = _MIN_HEIGHT = _MIN_DERIVATIVE = 1e-3
ENDS = ("fixed", "free", "secant")
#: What one end of a per-bound choice may be.
BOUND_ENDS = ("free", "secant")


def rational_quadratic_spline(
    z: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The monotone rational-quadratic spline of Durkan et al. (2019) on :math:`[-1, 1]`, every knot's derivative free.

    In bin :math:`k` with :math:`\theta = (z - z_k) / w_k`, slope :math:`s_k = h_k / w_k` and knot derivatives
    :math:`d_k, d_{k+1}`:

    .. math:: S(z) = y_k + h_k \frac{s_k\theta^2 + d_k\theta(1-\theta)}
        {s_k + (d_k + d_{k+1} - 2 s_k)\theta(1-\theta)},
        \qquad S'(z) = \frac{s_k^2 \big(d_{k+1}\theta^2 + 2 s_k\theta(1-\theta) + d_k(1-\theta)^2\big)}
        {\big(s_k + (d_k + d_{k+1} - 2 s_k)\theta(1-\theta)\big)^2};

    the inverse is the root of a quadratic in :math:`\theta`. Unlike Pyro's ``Spline`` the end derivatives
    :math:`d_0 = S'(-1)` and :math:`d_K = S'(1)` are inputs, not 1.

    Args:
        z: Points in :math:`[-1, 1]`, shape ``(..., D)``.
        widths: Bin widths, positive, summing to 2 over the last dimension, shape ``(D, K)``.
        heights: Bin heights, same constraints as ``widths``.
        derivatives: Knot derivatives, positive, shape ``(D, K + 1)``.
        inverse: Compute :math:`S^{-1}` instead (``z`` is then an output value).

    Returns:
        ``(S(z), log S'(z))`` or, for the inverse, ``(S^{-1}(z), log (S^{-1})'(z))``, both shaped like ``z``.

    Example:
        >>> w = torch.full((1, 2), 1.0, dtype=torch.float64)
        >>> d = torch.tensor([[2.0, 1.0, 0.5]], dtype=torch.float64)
        >>> y, _ = rational_quadratic_spline(torch.tensor([[-1.0], [0.3], [1.0]], dtype=torch.float64), w, w, d)
        >>> x, _ = rational_quadratic_spline(y, w, w, d, inverse=True)
        >>> x.flatten().tolist()
        [-1.0, 0.3, 1.0]
    """
    knots_x = torch.cat([-torch.ones_like(widths[..., :1]), -1 + torch.cumsum(widths, -1)], -1)
    knots_y = torch.cat([-torch.ones_like(heights[..., :1]), -1 + torch.cumsum(heights, -1)], -1)
    knots_x[..., -1], knots_y[..., -1] = 1.0, 1.0  # exact ends despite rounding in the sums
    edges = (knots_y if inverse else knots_x)[..., 1:-1].contiguous()
    # Bin of each point, per dimension: count the interior knots at or below it.
    k = (z.unsqueeze(-1) >= edges).sum(-1, keepdim=True)

    def pick(table: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return torch.gather(table.expand(*z.shape, table.shape[-1]), -1, k + offset).squeeze(-1)

    x_k, y_k, w_k, h_k = pick(knots_x), pick(knots_y), pick(widths), pick(heights)
    d_k, d_k1 = pick(derivatives), pick(derivatives, 1)
    s_k = h_k / w_k
    curvature = d_k + d_k1 - 2 * s_k
    if inverse:
        dy = z - y_k
        a = h_k * (s_k - d_k) + dy * curvature
        b = h_k * d_k - dy * curvature
        c = -s_k * dy
        theta = (2 * c / (-b - torch.sqrt((b * b - 4 * a * c).clamp(min=0)))).clamp(0, 1)
    else:
        theta = ((z - x_k) / w_k).clamp(0, 1)
    one_minus = 1 - theta
    denominator = s_k + curvature * theta * one_minus
    log_derivative = (
        2 * torch.log(s_k)
        + torch.log(d_k1 * theta**2 + 2 * s_k * theta * one_minus + d_k * one_minus**2)
        - 2 * torch.log(denominator)
    )
    if inverse:
        return x_k + theta * w_k, -log_derivative
    return y_k + h_k * (s_k * theta**2 + d_k * theta * one_minus) / denominator, log_derivative


class SigmoidSpline(TransformModule):
    r"""Elementwise whole-interval spline in logit space: :math:`x \mapsto \operatorname{logit}(S(\sigma(x)))`.

    Args:
        input_dim: Dimension of the input.
        count_bins: Number of spline bins over the unit interval.
        order: ``"linear"`` (rational-linear, Pyro's default) or ``"quadratic"``.
        ends: The spline's derivatives at :math:`\pm 1`, hence the density at each bound: ``"fixed"`` (Pyro's
            0.999), ``"free"`` (learned), ``"secant"`` (each end bin's mean slope), or per bound: a ``(lower,
            upper)`` pair of ``"free"`` / ``"secant"`` per dimension; all but ``"fixed"`` need ``order="quadratic"``.
        cache_size: As for :class:`torch.distributions.Transform`.

    Example:
        >>> t = SigmoidSpline(1).double()
        >>> x = torch.linspace(-6, 6, 5, dtype=torch.float64)[:, None]
        >>> bool((t._inverse(t(x)) - x).abs().max() < 1e-8)
        True
        >>> SigmoidSpline(1, order="quadratic", ends=[("secant", "free")]).bound_ends
        [['secant', 'free']]
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = 1

    def __init__(
        self,
        input_dim: int,
        count_bins: int = 16,
        order: str = "linear",
        ends: str | Sequence[Sequence[str]] = "fixed",
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        per_bound = None if isinstance(ends, str) else _secant_mask(ends, input_dim)
        if isinstance(ends, str) and ends not in ENDS:
            raise ValueError(f"ends must be one of {ENDS} or (lower, upper) pairs, got {ends!r}")
        if ends != "fixed" and order != "quadratic":
            raise ValueError(f"ends={ends!r} needs order='quadratic' (the rational-quadratic spline)")
        self.input_dim = input_dim
        #: ``"fixed"``, ``"free"``, ``"secant"`` or ``"per-bound"`` (see :attr:`bound_ends`).
        self.ends = ends if isinstance(ends, str) else "per-bound"
        # Pyro's random initialisation is kept on purpose: started at the identity, the held-out curve flattens
        # early and early stopping ended runs before the learning rate had decayed (held-out KL 0.0055 against
        # 0.0045, three seeds on the piecewise-uniform target).
        self.spline = Spline(input_dim, count_bins=count_bins, bound=1.0, order=order)
        if self.ends in ("free", "per-bound"):
            # End derivatives start at 1 (Pyro's spline fixes them at 0.999): nearly the same starting function.
            start = torch.log(torch.expm1(torch.tensor(1.0 - _MIN_DERIVATIVE)))
            self.unnormalized_end_derivatives = nn.Parameter(start.expand(input_dim, 2).clone())
        if per_bound is not None:
            # Not saved: the owner's config holds the choice (CompactFlow's bound_ends), so a state dict is the same
            # whichever ends were chosen.
            self.register_buffer("secant_ends", per_bound, persistent=False)

    @property
    def bound_ends(self) -> list[list[str]]:
        """The ends of each dimension, ``[lower, upper]``: ``"fixed"``, ``"free"`` or ``"secant"``."""
        if self.ends != "per-bound":
            return [[self.ends, self.ends] for _ in range(self.input_dim)]
        return [[BOUND_ENDS[int(s)] for s in row] for row in self.get_buffer("secant_ends").tolist()]

    def set_bound_ends(self, ends: Sequence[Sequence[str]]) -> None:
        """Choose each end of a per-bound spline in place: a ``(lower, upper)`` pair per dimension.

        Each end is ``"free"`` or ``"secant"``; the parameters are kept (a free end takes up its own again).

        Example:
            >>> t = SigmoidSpline(2, order="quadratic", ends=[("free", "free")] * 2)
            >>> t.set_bound_ends([("secant", "free"), ("free", "secant")])
            >>> t.bound_ends
            [['secant', 'free'], ['free', 'secant']]
        """
        if self.ends != "per-bound":
            raise ValueError(f"set_bound_ends needs a spline with per-bound ends, this one has ends={self.ends!r}")
        self.get_buffer("secant_ends").copy_(_secant_mask(ends, self.input_dim))

    def _spline_op(self, z: torch.Tensor, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ends == "fixed":
            return self.spline.spline_op(z, inverse=inverse)
        spline, bins = self.spline, self.spline.count_bins
        # The same bounds on widths, heights and derivatives as Pyro's spline, on the width-2 interval [-1, 1].
        widths = 2 * (_MIN_WIDTH + (1 - _MIN_WIDTH * bins) * F.softmax(spline.unnormalized_widths, -1))
        heights = 2 * (_MIN_HEIGHT + (1 - _MIN_HEIGHT * bins) * F.softmax(spline.unnormalized_heights, -1))
        inner = F.softplus(spline.unnormalized_derivatives)
        if self.ends != "secant":
            first, last = (_MIN_DERIVATIVE + F.softplus(self.unnormalized_end_derivatives)).split(1, -1)
        if self.ends != "free":  # each end bin's mean slope
            first_secant, last_secant = heights[:, :1] / widths[:, :1], heights[:, -1:] / widths[:, -1:]
            if self.ends == "secant":
                first, last = first_secant, last_secant
            else:
                secant = self.get_buffer("secant_ends")
                first = torch.where(secant[:, :1], first_secant, first)
                last = torch.where(secant[:, 1:], last_secant, last)
        derivatives = torch.cat([first, _MIN_DERIVATIVE + inner, last], -1)
        return rational_quadratic_spline(z, widths, heights, derivatives, inverse=inverse)

    def _as_param_dtype(self, x: torch.Tensor) -> torch.Tensor:
        # Pyro's spline writes results into a tensor of the input's dtype: compute in the parameters' dtype.
        return x.to(self.spline.unnormalized_widths.dtype)

    @staticmethod
    def _clamp_open(z: torch.Tensor) -> torch.Tensor:
        # Past |x| ~ 36 (float64) or ~ 16 (float32) sigma(x) rounds to 0 or 1; keep the spline's input and output
        # strictly inside (-1, 1) so the logit stays finite (such x have base probability below 1e-7).
        eps = 2 * torch.finfo(z.dtype).eps
        return z.clamp(-1 + eps, 1 - eps)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        x = self._as_param_dtype(x)
        z = self._clamp_open(torch.tanh(x / 2))  # 2 sigma(x) - 1, with better precision in the middle
        s, _ = self._spline_op(z)
        s = self._clamp_open(s)
        return torch.log1p(s) - torch.log1p(-s)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = self._as_param_dtype(y)
        s = self._clamp_open(torch.tanh(y / 2))
        z, _ = self._spline_op(s, inverse=True)
        z = self._clamp_open(z)
        return torch.log1p(z) - torch.log1p(-z)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\log S'(z) + \log(1 - z^2) - \log(1 - s^2)` with :math:`z = \tanh(x/2)`, :math:`s = \tanh(y/2)`.

        These are the logit and sigmoid Jacobians in their tanh form.
        """
        x, y = self._as_param_dtype(x), self._as_param_dtype(y)
        z = self._clamp_open(torch.tanh(x / 2))
        _, log_spline = self._spline_op(z)
        # log(1 - tanh(a/2)^2) = log 4 + logsigmoid(a) + logsigmoid(-a), exact in both tails.
        return (log_spline + F.logsigmoid(x) + F.logsigmoid(-x) - F.logsigmoid(y) - F.logsigmoid(-y)).sum(-1)


def check_bound_ends(
    ends: object, input_dim: int, name: str = "ends", allowed: Sequence[str] = BOUND_ENDS
) -> list[list[str]]:
    """Per-bound ends as plain lists: one ``[lower, upper]`` pair of ``allowed`` ends per dimension.

    Raises:
        DataError: (a ``ValueError``) naming ``name``, for any other value.

    Example:
        >>> check_bound_ends([("secant", "free")], 1)
        [['secant', 'free']]
    """
    rows = [list(pair) for pair in ends] if isinstance(ends, (list, tuple)) else []
    if len(rows) != input_dim or any(len(r) != 2 or any(e not in allowed for e in r) for r in rows):
        raise DataError(
            f"{name}: expected {input_dim} (lower, upper) pair(s) of {' or '.join(map(repr, allowed))}, got {ends!r}"
        )
    return rows


def _secant_mask(ends: Sequence[Sequence[str]], input_dim: int) -> torch.Tensor:
    """``(input_dim, 2)`` booleans, True where a per-bound ``ends`` is ``"secant"`` (checked by check_bound_ends)."""
    rows = check_bound_ends(ends, input_dim)
    return torch.tensor([[e == "secant" for e in r] for r in rows], dtype=torch.bool)


def sigmoid_spline(input_dim: int, count_bins: int = 16) -> SigmoidSpline:
    """Build a :class:`SigmoidSpline`.

    Example:
        >>> sigmoid_spline(2, count_bins=8).spline.count_bins
        8
    """
    return SigmoidSpline(input_dim, count_bins=count_bins)
