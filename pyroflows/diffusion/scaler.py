r"""Min-max scaling of each data column to [-1, 1], as a module whose range is saved with the model.

The post found linear scaling to [-1, 1] (not standardisation) essential for few-step DDPMs. The map is
:math:`s(x) = 2 (x - \text{low}) / (\text{high} - \text{low}) - 1` per column; its log-Jacobian
:math:`\sum_d \log(2 / (\text{high}_d - \text{low}_d))` converts densities between data and scaled units.

Example:
    >>> import torch
    >>> scaler = MinMaxScaler(2).fit(torch.tensor([[0.0, 10.0], [4.0, 30.0]]))
    >>> scaler(torch.tensor([[2.0, 30.0]]))
    tensor([[0., 1.]])
    >>> scaler.inverse(torch.tensor([[0.0, 1.0]]))
    tensor([[ 2., 30.]])
"""

from __future__ import annotations

import torch
from torch import nn

from pyroflows.errors import DataError
from pyroflows.validation import as_finite_2d

__all__ = ["MinMaxScaler"]


class MinMaxScaler(nn.Module):
    """Affine map of each column's ``[low, high]`` (fitted on training data) onto ``[-1, 1]``.

    ``low`` and ``high`` are buffers, so they travel with ``state_dict`` and ``.to(device)``.

    Args:
        data_dim: The number of columns D.
    """

    low: torch.Tensor
    high: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.data_dim = int(data_dim)
        self.register_buffer("low", -torch.ones(self.data_dim))
        self.register_buffer("high", torch.ones(self.data_dim))
        self.register_buffer("fitted", torch.tensor(False))

    def _check(self, x: torch.Tensor, name: str = "x") -> None:
        if x.dim() < 1 or x.shape[-1] != self.data_dim:
            raise DataError(f"{name}: expected shape (N, {self.data_dim}), got {tuple(x.shape)}")

    def fit(self, x: torch.Tensor) -> MinMaxScaler:
        """Set ``low``/``high`` to the column minima/maxima of ``x`` of shape ``(N, D)``.

        Raises:
            DataError: wrong shape, non-finite values, or a constant column (it cannot be scaled to [-1, 1]).
        """
        if x.dim() != 2:
            raise DataError(f"data: expected a 2-D array of shape (N, {self.data_dim}), got shape {tuple(x.shape)}")
        self._check(x, "data")
        x = as_finite_2d(x, "data", dim=self.data_dim, allow_1d=False)
        low, high = x.min(dim=0).values, x.max(dim=0).values
        constant = torch.nonzero(high - low <= 1e-12 * high.abs().clamp(min=1.0)).flatten()
        if constant.numel():
            raise DataError(
                f"data: column(s) {constant.tolist()} are constant (value {low[constant[0]].item():g}); a constant "
                "column cannot be scaled to [-1, 1]: drop it before training"
            )
        self.low.copy_(low.detach())
        self.high.copy_(high.detach())
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Data units to [-1, 1]."""
        self._check(x)
        return 2 * (x - self.low) / (self.high - self.low) - 1

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """[-1, 1] back to data units."""
        self._check(y)
        return (y + 1) / 2 * (self.high - self.low) + self.low

    def log_abs_det_jacobian(self) -> torch.Tensor:
        r""":math:`\log |\det \partial s / \partial x| = \sum_d \log(2 / (\text{high}_d - \text{low}_d))` (a scalar)."""
        return torch.log(2 / (self.high - self.low)).sum()
