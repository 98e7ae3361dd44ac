"""AutoCompactFlow as a guide: it fits a bounded posterior better than AutoNormal, and says what it cannot do."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroflows.flows import AutoCompactFlow, interval_bounds, psis_khat
from pyroflows.flows.beta_binomial import compare_guides


def test_beats_autonormal_on_a_posterior_piled_against_a_bound():
    """Fast version of the benchmark's guide comparison: exact posterior Beta(1, 41)."""
    result = compare_guides(successes=0, trials=40, steps=150, lr=0.1, num_samples=4000)
    flow, normal = result["AutoCompactFlow"], result["AutoNormal"]
    assert flow["kl"] < normal["kl"] / 2
    assert flow["kl"] < 0.1
    assert flow["khat"] < 0.7


def test_the_comparison_uses_the_prior_it_is_given():
    """Beta(20, 2) prior, 0 of 40: posterior Beta(20, 42) (mean 0.32), far from the flat prior's Beta(1, 41)."""
    result = compare_guides(successes=0, trials=40, a=20.0, b=2.0, steps=150, lr=0.1, num_samples=4000)
    flow = result["AutoCompactFlow"]
    assert flow["kl"] < 0.1
    assert flow["khat"] < 0.7


def test_guide_sites_and_shapes_with_a_plate():
    def model():
        with pyro.plate("groups", 3):
            pyro.sample("p", dist.Beta(2.0, 2.0))
        pyro.sample("u", dist.Uniform(-1.0, 4.0))

    guide = AutoCompactFlow(model, num_layers=1, count_bins=4)
    values = guide()
    assert values["p"].shape == (3,) and values["u"].shape == ()
    assert ((values["p"] > 0) & (values["p"] < 1)).all() and -1 < values["u"] < 4
    posterior = guide.get_posterior()
    assert posterior.event_shape == (4,)
    assert torch.equal(posterior.support.base_constraint.upper_bound, torch.tensor([1.0, 1.0, 1.0, 4.0]).double())
    elbo = pyro.infer.Trace_ELBO().differentiable_loss(model, guide)
    assert torch.isfinite(elbo)


def test_unbounded_site_is_refused_with_advice():
    def model():
        pyro.sample("scale", dist.LogNormal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"'scale' has support .* not an interval; use AutoNormal"):
        AutoCompactFlow(model)()


def test_interval_bounds():
    assert interval_bounds(dist.Uniform(-1.0, 2.0).support) == (-1.0, 2.0)
    assert interval_bounds(dist.Beta(1.0, 1.0).to_event(0).support) == (0.0, 1.0)
    assert interval_bounds(dist.Normal(0.0, 1.0).support) is None


def test_psis_khat_flags_a_proposal_lighter_tailed_than_the_target():
    torch.manual_seed(0)
    theta = torch.randn(4000)
    log_q = dist.Normal(0.0, 1.0).log_prob(theta)
    assert psis_khat(dist.Normal(0.0, 0.9).log_prob(theta), log_q) < 0.5
    assert psis_khat(dist.Cauchy(0.0, 1.0).log_prob(theta), log_q) > 0.7
