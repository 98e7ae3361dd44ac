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
    fit(segment.arc, segment.to_arc_length(points), steps=5, progress=False)
    loaded = SegmentFlow.load(segment.save(tmp_path / "segment.pt"))
    with torch.no_grad():
        assert torch.equal(loaded().log_prob(points), segment().log_prob(points))
    assert isinstance(loaded.arc, CompactFlow)
    # The ends fit chose at each bound of the arc-length flow (t ~ 3 u^2: density diverging at p0, flat at p1).
    assert loaded.arc.config["bound_ends"] == segment.arc.config["bound_ends"] == [["free", "secant"]]


def test_bad_end_points():
    with pytest.raises(ValueError, match="coincide"):
        SegmentFlow([1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        SegmentFlow([1.0, 1.0], [1.0, 1.0, 2.0])


@pytest.mark.filterwarnings("ignore::pyroflows.flows.fit.ConvergenceWarning")
def test_fit_takes_a_segment_flow_and_its_points():
    segment = SegmentFlow([1.0, 0.0, -1.0], [3.0, 2.0, 0.0], num_layers=2)
    torch.manual_seed(0)
    t = 3.0 * torch.rand(300, dtype=torch.float64) ** 2
    points = segment.p0 + t[:, None] * (segment.p1 - segment.p0) / 3.0
    with torch.no_grad():
        before = -segment().log_prob(points).mean().item()
    result = fit(segment, points, steps=100, seed=0, progress=False)
    with torch.no_grad():
        after = -segment().log_prob(points).mean().item()
    assert result.steps == 100 and after < before
    with pytest.raises(DataError, match=r"lie off the segment"):
        fit(segment, points + torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64), steps=1, progress=False)


def test_float32_points_on_a_segment_far_from_the_origin_are_on_it():
    p0, p1 = [1e4, -2e4, 5e3], [1e4 + 3.0, -2e4 + 4.0, 5e3]  # length 5, coordinates ~1e4
    segment = SegmentFlow(p0, p1, num_layers=1)
    t = torch.linspace(0, 5, 101, dtype=torch.float64)
    exact = segment.p0 + t[:, None] * (segment.p1 - segment.p0) / 5.0
    points32 = exact.float()  # rounding each coordinate moves a point by up to ~1e-3, far above 1e-6 * length
    arc = segment.to_arc_length(points32)
    # The arc lengths are right to the float32 resolution of the coordinates: sqrt(3) * eps32 / 2 * 2e4.
    assert (arc[:, 0] - t).abs().max().item() <= math.sqrt(3) * torch.finfo(torch.float32).eps / 2 * 2e4
    with torch.no_grad():
        assert torch.isfinite(segment().log_prob(points32)).all()
    # A float32 point a whole float32 grid step times 10 off the line is still rejected.
    off = points32[50:51].clone()
    off[0, 2] += 0.05
    with pytest.raises(DataError, match="off the segment"):
        segment.to_arc_length(off)
    # float64 points far from the origin keep a float64-sized tolerance.
    with pytest.raises(DataError, match="off the segment"):
        segment.to_arc_length(exact[50:51] + torch.tensor([0.0, 0.0, 1e-4], dtype=torch.float64))
