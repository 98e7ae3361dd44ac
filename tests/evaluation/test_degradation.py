"""Degradation curves and score: known answers on a linear model, Quantus' RegionPerturbation, batching, errors."""

import numpy as np
import pytest
import torch
from torch import nn

from pyroflows.errors import DataError
from pyroflows.evaluation import degradation_curves, degradation_score, normalize_curves

from ._models import LinearPixelModel, images, tiny_cnn


@pytest.fixture
def linear_case():
    model = LinearPixelModel(8)
    x = images(6, side=8, dtype=torch.float64)
    target = model(x).argmax(1)  # the predicted class, whose probability falls to 1/2 on the mean image
    return model, x, target, model.relevance(x, target)


@pytest.mark.parametrize("tile_size", [1, 2, 4])
def test_perfect_map_beats_every_random_map_and_inverted_map_is_its_negative(linear_case, tile_size):
    model, x, target, truth = linear_case
    perfect = degradation_score(model, x, truth, target, tile_size=tile_size)
    inverted = degradation_score(model, x, -truth, target, tile_size=tile_size)
    assert (perfect > 0).all()
    # Reversing the ranking swaps MoRF and LeRF, so the area changes sign exactly.
    torch.testing.assert_close(inverted, -perfect)
    generator = torch.Generator().manual_seed(1)
    for _ in range(10):
        random_map = torch.rand(truth.shape, generator=generator, dtype=torch.float64)
        # The tile sums of the truth give the optimal order: no other order removes more logit per step.
        assert (degradation_score(model, x, random_map, target, tile_size=tile_size) <= perfect + 1e-12).all()


def test_random_maps_score_near_zero_on_average(linear_case):
    model, x, target, _ = linear_case
    generator = torch.Generator().manual_seed(2)
    scores = torch.stack(
        [
            degradation_score(model, x, torch.rand(6, 8, 8, generator=generator, dtype=torch.float64), target)
            for _ in range(30)
        ]
    )
    assert abs(float(scores.mean())) < 0.05


def test_constant_map_scores_exactly_zero(linear_case):
    model, x, target, _ = linear_case
    assert torch.equal(degradation_score(model, x, torch.ones(6, 8, 8), target, tile_size=2), torch.zeros(6).double())


def test_curve_endpoints_are_the_original_and_the_fully_degraded_image(linear_case):
    model, x, target, truth = linear_case
    curves = degradation_curves(model, x, truth, target, tile_size=4)
    rows = torch.arange(6)
    original = model(x).softmax(-1)[rows, target].detach()
    degraded = model(x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)).softmax(-1)[rows, target].detach()
    for curve in (curves.morf, curves.lerf):
        torch.testing.assert_close(curve[:, 0], original)
        torch.testing.assert_close(curve[:, -1], degraded)
    assert curves.fraction.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    morf, lerf = curves.normalized("image")
    torch.testing.assert_close(morf[:, 0], torch.ones(6).double())
    torch.testing.assert_close(lerf[:, -1], torch.zeros(6).double())


def test_aggregate_score_normalises_the_mean_curves(linear_case):
    model, x, target, truth = linear_case
    curves = degradation_curves(model, x, truth, target, tile_size=2)
    morf, lerf = curves.morf.mean(0), curves.lerf.mean(0)
    expected = np.trapezoid(
        normalize_curves(lerf, lerf[0], lerf[-1]) - normalize_curves(morf, morf[0], morf[-1]), curves.fraction
    )
    assert curves.score() == pytest.approx(float(expected))


def test_batched_equals_one_at_a_time():
    model, x = tiny_cnn(), images(5)
    maps = torch.rand(5, 16, 16)
    target = torch.tensor([0, 1, 2, 0, 1])
    batched = degradation_curves(model, x, maps, target, tile_size=4, batch_size=7)
    for i in range(5):
        single = degradation_curves(model, x[i : i + 1], maps[i : i + 1], target[i : i + 1], tile_size=4)
        torch.testing.assert_close(single.morf[0], batched.morf[i])
        torch.testing.assert_close(single.lerf[0], batched.lerf[i])


def test_matches_quantus_region_perturbation():
    quantus = pytest.importorskip("quantus")
    model, x = tiny_cnn(seed=3), images(4, seed=3)
    maps = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(4))  # no ties between tile sums
    target = model(x).argmax(1)
    ours = degradation_curves(model, x, maps, target, tile_size=4)
    for order, curve in (("morf", ours.morf), ("lerf", ours.lerf)):
        metric = quantus.RegionPerturbation(
            patch_size=4,
            order=order,
            regions_evaluation=16,
            # Quantus' "mean" is the mean of the partly perturbed image at each step, which drifts as patches are
            # replaced; pass the original image's mean (one channel, so per-channel = global) as a fixed array.
            perturb_baseline=np.repeat(x.mean(dim=(1, 2, 3)).numpy()[:, None], 16, axis=1),
            abs=False,
            normalise=False,
            disable_warnings=True,
        )
        drops = metric(
            model=model,
            x_batch=x.numpy(),
            y_batch=target.numpy(),
            a_batch=maps[:, None].numpy(),
            softmax=True,
            channel_first=True,
        )
        # Quantus reports the drop p_0 - p_k for k = 1..K.
        expected = curve[:, :1] - curve[:, 1:]
        np.testing.assert_allclose(np.asarray(drops), expected.numpy(), atol=1e-6)


def test_errors_name_the_problem():
    model, x = tiny_cnn(), images(2)
    with pytest.raises(DataError, match=r"tile_size=5 does not divide the image size 16x16"):
        degradation_curves(model, x, torch.rand(2, 16, 16), 0, tile_size=5)
    with pytest.raises(DataError, match=r"attributions must be \[N, H, W\] = \[2, 16, 16\].*got \(2, 8, 8\)"):
        degradation_curves(model, x, torch.rand(2, 8, 8), 0)
    with pytest.raises(DataError, match=r"attributions must be .* got \(3, 16, 16\)"):
        degradation_score(model, x, torch.rand(3, 16, 16), 0)
    with pytest.raises(DataError, match=r"target: expected an int or 2 class indices \(one per row\), got shape"):
        degradation_curves(model, x, torch.rand(2, 16, 16), torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match=r"inputs must be a tensor \[N, C, H, W\]"):
        degradation_curves(model, x[0, 0], torch.rand(2, 16, 16), 0)  # a float [N, L] is not token ids
    with pytest.raises(DataError, match=r"NaN or inf values in rows \[1\]"):
        degradation_curves(model, x, torch.tensor([0.0, float("nan")])[:, None, None].expand(2, 16, 16), 0)
    with pytest.raises(DataError, match=r"target: classes outside 0..2 in rows \[1\]: \[7\]"):
        degradation_curves(model, x, torch.rand(2, 16, 16), torch.tensor([0, 7]))
    with pytest.raises(DataError, match="baseline must be"):
        degradation_curves(model, x, torch.rand(2, 16, 16), 0, baseline="grey")


def test_model_outputs_logits_option():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    x = images(2, side=4)
    curves = degradation_curves(model, x, torch.rand(2, 4, 4), 1, tile_size=2, output="logit")
    torch.testing.assert_close(curves.morf[:, 0], model(x)[:, 1].detach())
