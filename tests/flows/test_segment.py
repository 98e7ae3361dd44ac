"""SegmentFlow: a density on a line segment in R^n, w.r.t. arc length; points off the segment are impossible."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyroflows.errors import DataError
from pyroflows.flows import CompactFlow, SegmentFlow, fit


@pytest.fixture
def segment() -> SegmentFlow:
    return SegmentFlow([1.0, 0.0, -1.0], [3.0, 2.0, 0.0], num_layers=3)  # length 3


def test_samples_lie_on_the_segment_and_score_like_the_arc_flow(segment):
    d = segment()
    points = d.sample((500,))
    assert d.support.check(points).all()
    t = segment.to_arc_length(points)
    assert (t >= 0).all() and (t <= 3.0 + 1e-12).all()
    with torch.no_grad():
        assert torch.allclose(d.log_prob(points), segment.arc().log_prob(t), atol=1e-9)


def test_density_integrates_to_one_along_the_arc(segment):
    t = torch.linspace(0, 3.0, 200001, dtype=torch.float64)[1:-1]
    direction = (segment.p1 - segment.p0) / 3.0
    points = segment.p0 + t[:, None] * direction
    with torch.no_grad():
        density = segment().log_prob(points).exp()
    assert torch.trapezoid(density, t).item() == pytest.approx(1.0, abs=2e-3)


def test_off_segment_points(segment):
    off = torch.tensor([[2.0, 1.0, 0.5], [5.0, 4.0, 1.0], [2.0, 1.0, -0.5]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"2 point\(s\) off the segment"):
        segment().log_prob(off)
    with pyro.validation_enabled(False):
        lp = segment().log_prob(off)
    assert lp[0] == -math.inf and lp[1] == -math.inf and torch.isfinite(lp[2])
    with pytest.raises(DataError, match=r"2 of 3 row\(s\) lie off the segment"):
        segment.to_arc_length(off)


def test_fit_and_save_load(segment, tmp_path):
    torch.manual_seed(0)
    t = 3.0 * torch.rand(400, dtype=torch.float64) ** 2  # mass near p0
    points = segment.p0 + t[:, None] * (segment.p1 - segment.p0) / 3.0
    fit(segment.arc, segment.to_arc_length(points), epochs=5, progress=False)
    loaded = SegmentFlow.load(segment.save(tmp_path / "segment.pt"))
    with torch.no_grad():
        assert torch.equal(loaded().log_prob(points), segment().log_prob(points))
    assert isinstance(loaded.arc, CompactFlow)


def test_bad_end_points():
    with pytest.raises(ValueError, match="coincide"):
        SegmentFlow([1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        SegmentFlow([1.0, 1.0], [1.0, 1.0, 2.0])
