"""The per-sample bottleneck: the KL identity, hooks and flags restored, batching, a planted feature, errors."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyroflows.attribution import PerSampleBottleneck, per_element_capacity
from pyroflows.attribution.capacity import gaussian_blur, lambda_from_alpha
from pyroflows.attribution.layers import LayerSplit, LayerSplitWarning
from pyroflows.attribution.statistics import FeatureStatistics
from pyroflows.errors import DataError


def test_closed_form_kl_equals_pyro_normal_kl():
    torch.manual_seed(1)
    r, mu = torch.randn(1000, dtype=torch.float64) * 3, torch.randn(1000, dtype=torch.float64)
    sigma = torch.rand(1000, dtype=torch.float64) + 0.1
    lam = torch.rand(1000, dtype=torch.float64) * 0.999
    posterior = dist.Normal(lam * r + (1 - lam) * mu, (1 - lam) * sigma)  # P(Z | R)
    prior = dist.Normal(mu, sigma)  # Q(Z)
    expected = torch.distributions.kl_divergence(posterior, prior)
    assert torch.allclose(per_element_capacity(r, 1 - lam, mu, sigma), expected, rtol=1e-10, atol=1e-12)


def test_one_minus_lambda_is_the_blurred_complement():
    alpha = torch.randn(2, 3, 6, 5, dtype=torch.float64) * 4
    lam = gaussian_blur(torch.sigmoid(alpha), 1.0)
    assert torch.allclose(lambda_from_alpha(alpha, 1.0), 1 - lam, atol=1e-12)
    # Huge alpha: 1 - lambda stays positive, so log(1 - lambda)^2 is finite.
    assert (lambda_from_alpha(torch.full((1, 1, 4, 4), 200.0), 1.0) > 0).all()


def test_streaming_statistics_match_the_batch_formula_and_handle_dead_units():
    x = torch.randn(103, 3, 4, 4) * 2 + 1
    x[:, 0] = 0.0  # a dead unit: zero variance
    stats = FeatureStatistics()
    for batch in x.split(10):
        stats.update(batch)
    assert torch.allclose(stats.mean.to(x.dtype), x.mean(0), atol=1e-6)
    assert torch.allclose(stats.std().to(x.dtype), x.std(0), atol=1e-5)
    assert (stats.std(0.01)[0] == 0.01).all() and not stats.active()[0].any() and stats.active()[1:].all()


def _toy_model():
    """A conv net whose class-1 logit looks only at channel 0 in the top-left 4x4 corner (the planted feature)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    head = nn.Linear(4 * 8 * 8, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[:, 0, 1, 1] = 1.0  # identity on input channel 0 into all 4 feature channels
        conv.weight[:, 1, 1, 1] = 0.0  # input channel 1 is never used
        head.weight.zero_()
        head.bias.zero_()
        mask = torch.zeros(4, 8, 8)
        mask[:, :4, :4] = 1.0
        head.weight[1] = mask.flatten() * 0.1
        head.weight[0] = -mask.flatten() * 0.1
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), head)


def test_planted_feature_gets_the_attribution():
    # Without the ReLU the noise (mean 0) carries no evidence for either class: only the corner can.
    model = _toy_model()
    model = nn.Sequential(model[0], model[2], model[3])
    data = torch.randn(256, 2, 8, 8)
    inputs = torch.randn(3, 2, 8, 8) * 2  # features everywhere, but only the corner matters to the model
    inputs[:, 0, :4, :4] = 2.0
    # k = 256 elements only, so the paper's beta = 10 (for k ~ 10^5) would price the corner out.
    bottleneck = PerSampleBottleneck(model, "0", steps=10, beta=0.5).estimate(data)
    maps = bottleneck.attribute(inputs, target=1)
    corner = maps[:, :4, :4].mean((1, 2))
    rest = maps.clone()
    rest[:, :4, :4] = 0
    outside = rest.sum((1, 2)) / (64 - 16)
    assert (corner > 5 * outside).all(), (corner, outside)
    assert (maps >= 0).all()


def test_batched_equals_one_at_a_time():
    model = _toy_model()
    bottleneck = PerSampleBottleneck(model, "0", steps=4).estimate(torch.rand(128, 2, 8, 8))
    inputs, target = torch.rand(4, 2, 8, 8) * 2, torch.tensor([1, 0, 1, 1])
    pyro.set_rng_seed(3)
    together = bottleneck.attribute(inputs, target)
    alone = []
    for i in range(4):
        pyro.set_rng_seed(3)
        alone.append(bottleneck.attribute(inputs[i : i + 1], target[i : i + 1]))
    assert torch.allclose(together, torch.cat(alone), rtol=1e-4, atol=1e-5)


def test_graph_split_and_whole_model_rerun_give_the_same_maps():
    model = _toy_model()
    data, inputs = torch.rand(128, 2, 8, 8), torch.rand(2, 2, 8, 8)
    maps = []
    for graph_split in (True, False):
        bottleneck = PerSampleBottleneck(model, "1", steps=3, graph_split=graph_split).estimate(data)
        assert bottleneck.split.mode == ("graph" if graph_split else "rerun")
        pyro.set_rng_seed(0)
        maps.append(bottleneck.attribute(inputs, 1))
    assert torch.allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6)


class _Residual(nn.Module):
    """A residual block: the identity branch bypasses the bottleneck layer ``conv``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x) + x)


def test_split_inside_a_residual_block_runs_the_head_once():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), _Residual(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    split = LayerSplit(model, "1.conv")
    calls = []
    handle = model[0].register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 1, 6, 6)
    head = split.head(x)
    assert split.mode == "graph" and len(head.carried) == 1  # the identity branch is carried to the tail
    calls.clear()
    z = head.features.repeat(3, 1, 1, 1)
    assert torch.allclose(split.tail(z, head), model(x).repeat(3, 1), atol=1e-6)
    assert calls == [1]  # only the model(x) call above ran the first layer; the tail did not
    handle.remove()


def _flags(model):
    return [p.requires_grad for p in model.parameters()], [m.training for m in model.modules()]


def test_hooks_modes_and_flags_restored_after_success_and_after_an_error():
    model = _toy_model().train()
    model[0].eval()  # a deliberately mixed state must come back as it was
    before = _flags(model)
    bottleneck = PerSampleBottleneck(model, "1", steps=2, graph_split=False).estimate(torch.rand(64, 2, 8, 8))
    bottleneck.attribute(torch.rand(2, 2, 8, 8), 0)
    assert _flags(model) == before
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(DataError, match="target"):
        bottleneck.attribute(torch.rand(2, 2, 8, 8), torch.tensor([0, 1, 0]))
    assert _flags(model) == before

    # An error raised inside the network's tail, mid-optimisation:
    class Boom(nn.Module):
        def forward(self, x):
            if not torch.is_grad_enabled():
                return x
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), Boom(), nn.Flatten(), nn.Linear(2 * 8 * 8, 2)).train()
    before = _flags(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerSplitWarning)
        bottleneck = PerSampleBottleneck(model, "1", graph_split=False).estimate(torch.rand(32, 2, 8, 8))
    with pytest.raises(RuntimeError, match="boom"):
        bottleneck.attribute(torch.rand(1, 2, 8, 8), 0)
    assert _flags(model) == before
    assert all(not m._forward_hooks for m in model.modules())
    assert len(pyro.get_param_store()) == 0  # the private parameter store did not leak


def test_dead_units_give_finite_maps():
    model = _toy_model()
    data = torch.rand(64, 2, 8, 8)
    data[:, 0] = -1.0  # after conv (identity of channel 0) and ReLU every unit is dead: zero variance
    bottleneck = PerSampleBottleneck(model, "1", steps=3).estimate(data)
    assert not bottleneck.active.any()
    maps = bottleneck.attribute(torch.rand(2, 2, 8, 8), 1)
    assert torch.isfinite(maps).all() and (maps == 0).all()


def test_unknown_layer_and_missing_estimate_give_clear_errors():
    model = _toy_model()
    with pytest.raises(ValueError, match=r"no layer named '5'.*Valid layer names include: '0', '1'"):
        PerSampleBottleneck(model, "5")
    with pytest.raises(ValueError, match="Did you mean 'features.4'"):
        PerSampleBottleneck(_named(), "feature.4")
    with pytest.raises(RuntimeError, match=r"call estimate\(data\) before attribute"):
        PerSampleBottleneck(model, "1").attribute(torch.rand(1, 2, 8, 8), 0)


def _named():
    model = nn.Module()
    model.features = nn.Sequential(*[nn.ReLU() for _ in range(5)])
    return model


def test_sequence_feature_maps_n_c_l():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(3, 6, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(6, 6, 3, padding=1),
        nn.AdaptiveMaxPool1d(1),
        nn.Flatten(),
        nn.Linear(6, 2),
    )
    bottleneck = PerSampleBottleneck(model, "1", steps=3).estimate(torch.randn(64, 3, 20))
    maps = bottleneck.attribute(torch.randn(2, 3, 20), target=0)
    capacity = bottleneck.capacity(torch.randn(2, 3, 20), target=0)
    assert maps.shape == (2, 20) and capacity.shape == (2, 6, 20)
    assert (maps >= 0).all() and torch.isfinite(maps).all()


def test_elbo_is_the_paper_loss():
    """The first step's negative ELBO per image = CE at the initial mask + beta * mean KL (vectorised copies)."""
    model = _toy_model()
    bottleneck = PerSampleBottleneck(model, "1", steps=1, batch_size=2000, beta=3.0, sigma=0.0)
    bottleneck.estimate(torch.rand(128, 2, 8, 8))
    inputs = torch.rand(1, 2, 8, 8)
    bottleneck.attribute(inputs, 1)
    head = bottleneck.split.head(inputs)
    one_minus_lambda = lambda_from_alpha(torch.full_like(head.features, 5.0), 0.0)
    mean, std, active = bottleneck._statistics_like(head.features)
    kl = torch.where(active, per_element_capacity(head.features, one_minus_lambda, mean, std), 0.0)
    eps = torch.randn(20000, *head.features.shape[1:])
    z = head.features - one_minus_lambda * (head.features - mean) + eps * one_minus_lambda * std
    ce = torch.nn.functional.cross_entropy(bottleneck.split.tail(z, head), torch.full((20000,), 1))
    assert bottleneck.history[0] == pytest.approx(float(ce.detach() + 3.0 * kl.mean()), rel=2e-2)


def test_compact_kl_for_expanded_distributions_equals_torch():
    from pyroflows.attribution.distributions import MaskedFeatureNormal

    loc, scale = torch.randn(3, 4, 5), torch.rand(3, 4, 5) + 0.1
    mu, sigma = torch.randn(4, 5), torch.rand(4, 5) + 0.5
    everywhere = torch.ones(4, 5, dtype=torch.bool)
    p = MaskedFeatureNormal(loc, scale, everywhere, 2, shared_noise=True).expand([7, 3])
    q = MaskedFeatureNormal(mu, sigma, everywhere, 2).expand([7, 3])
    expected = torch.distributions.kl_divergence(dist.Normal(loc, scale).expand([7, 3, 4, 5]), dist.Normal(mu, sigma))
    assert torch.allclose(torch.distributions.kl_divergence(p, q), expected.sum((-2, -1)), atol=1e-5)


def test_shared_noise_is_the_same_for_every_image_of_a_copy():
    from pyroflows.attribution.distributions import MaskedFeatureNormal

    d = MaskedFeatureNormal(torch.zeros(3, 2), torch.ones(3, 2), torch.ones(2, dtype=torch.bool), 1, shared_noise=True)
    z = d.expand([5, 3]).rsample()
    assert bool((z[:, 0] == z[:, 1]).all()) and bool((z[:, 1] == z[:, 2]).all())
    assert not bool((z[0] == z[1]).all())  # independent across copies


def test_closed_form_kl_elbo_equals_trace_mean_field_elbo():
    from pyro.infer import TraceMeanField_ELBO

    from pyroflows.attribution.elbo import ClosedFormKLELBO

    def model(x):
        with pyro.plate("n", 3):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), 0.5), obs=x)

    def guide(x):
        with pyro.plate("n", 3):
            pyro.sample("z", dist.Normal(torch.full((3, 2), 0.3), 0.7).to_event(1))

    x = torch.tensor([0.1, -0.4, 1.2])
    for elbo in (ClosedFormKLELBO, TraceMeanField_ELBO):
        pyro.set_rng_seed(5)
        value = elbo(num_particles=4, vectorize_particles=True, max_plate_nesting=1).loss(model, guide, x)
        if elbo is ClosedFormKLELBO:
            ours = value
    assert ours == pytest.approx(value, rel=1e-6)


class _BatchNormNet(nn.Module):
    """Conv + BatchNorm blocks, ReLUs before max-pools and a residual branch: what the optimised tail rewrites."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = self.stem(x)
        y = self.pool(torch.relu(self.bn1(self.conv1(x))))
        y = self.bn2(self.conv2(y)) + self.pool(x)
        return self.fc(torch.flatten(self.pool(torch.relu(y)), 1))


def _batch_norm_net():
    torch.manual_seed(0)
    model = _BatchNormNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics and affine parameters
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(p.requires_grad, p.is_contiguous(), p.stride()) for p in model.parameters()],
        [m.training for m in model.modules()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
    )


def _same(a, b):
    return a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and a[1:] == b[1:]


def test_optimised_tail_gives_the_same_maps_and_leaves_the_model_untouched():
    model = _batch_norm_net().train()
    model.stem.eval()  # a deliberately mixed state must come back as it was
    before = _snapshot(model)
    data, inputs, target = torch.randn(64, 1, 16, 16), torch.randn(3, 1, 16, 16), torch.tensor([0, 2, 1])
    maps = {}
    for optimize in (True, False):
        bottleneck = PerSampleBottleneck(model, "stem.1", steps=5, optimize_tail=optimize).estimate(data)
        pyro.set_rng_seed(7)
        maps[optimize] = bottleneck.attribute(inputs, target)
        assert bottleneck.split.optimize_tail is optimize  # the check against the plain tail passed
        assert _same(_snapshot(model), before)
    assert maps[True].abs().sum() > 0
    torch.testing.assert_close(maps[True], maps[False], rtol=1e-4, atol=1e-4 * float(maps[False].max()))


@pytest.mark.float32(reason="its tolerance is float32's rounding of the channels_last tail")
def test_an_optimised_tail_that_disagrees_is_dropped_with_a_warning(monkeypatch):
    import pyroflows.attribution.layers as layers  # where LayerSplit looks up optimize_tail and _same_output

    model = _batch_norm_net()
    data, inputs, target = torch.randn(64, 1, 16, 16), torch.randn(2, 1, 16, 16), torch.tensor([0, 2])
    plain = PerSampleBottleneck(model, "stem.1", steps=3, optimize_tail=False).estimate(data)
    pyro.set_rng_seed(7)
    expected = plain.attribute(inputs, target)

    class Doubled(nn.Module):  # a broken rewrite: every logit doubled (a shift would leave the loss as it is)
        def __init__(self, tail):
            super().__init__()
            self.tail = tail

        def forward(self, *args):
            return 2.0 * self.tail(*args)

    monkeypatch.setattr(layers, "optimize_tail", lambda tail, ndim: Doubled(tail))
    bottleneck = PerSampleBottleneck(model, "stem.1", steps=3).estimate(data)
    pyro.set_rng_seed(7)
    with pytest.warns(LayerSplitWarning, match="optimised tail after 'stem.1' is not used: its output differs"):
        maps = bottleneck.attribute(inputs, target)
    assert bottleneck.split.optimize_tail is False
    # The plain tail ran every step, but not bit for bit as in ``plain``: the optimised path lays the features out
    # channels_last, so the convolutions sum in another order (another CPU rounds differently again; an AMD EPYC
    # gave 4 of 512 elements off by 1.9e-6 on maps of about 20 bits). Float32 rounds by eps = 1.2e-7 per
    # operation; through sums of a few hundred terms, a backward pass and 3 optimiser steps that is well below
    # 1e-5 (about 100 eps) relative to the map's scale.
    scale = float(expected.abs().max())
    tolerance = 1e-5 * scale
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=tolerance)
    # The broken tail, had it run, would have moved the maps by far more than that tolerance.
    monkeypatch.setattr(layers, "_same_output", lambda candidate, reference: True)
    broken = PerSampleBottleneck(model, "stem.1", steps=3).estimate(data)
    pyro.set_rng_seed(7)
    assert float((broken.attribute(inputs, target) - expected).abs().max()) > 100 * tolerance


@pytest.mark.float32(reason="the folded tail against the plain one at float32's tolerance, on float32 inputs")
def test_optimize_tail_folds_batch_norm_moves_relus_and_keeps_values_and_gradients():
    from torch import fx

    from pyroflows.attribution.tail import optimize_tail

    model = _batch_norm_net().eval()
    before = _snapshot(model)
    traced = fx.symbolic_trace(model)
    fast = optimize_tail(traced, 4)
    kinds = [type(fast.get_submodule(n.target)) for n in fast.graph.nodes if n.op == "call_module"]
    assert nn.BatchNorm2d not in kinds and kinds.count(nn.Conv2d) == 3
    # relu before the first pool now comes after it; the stem's ReLU feeds two users and stays put.
    order = [n.target for n in fast.graph.nodes if n.op in ("call_module", "call_function")]
    assert order.index("pool") < order.index(torch.relu)
    x = torch.randn(5, 1, 16, 16, dtype=torch.float32)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_fast, out_plain = fast(x1), model(x2)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-5)
    out_fast.logsumexp(-1).sum().backward()
    out_plain.logsumexp(-1).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-6)
    assert _same(_snapshot(model), before)
    # The modules that are not folded are shared, not copied.
    assert fast.get_submodule("fc") is model.fc and fast.get_submodule("pool") is model.pool


def test_optimised_tail_is_skipped_while_the_tail_has_hooks():
    model = _batch_norm_net().eval()
    seen = []
    handle = model.conv2.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[0]))
    try:
        bottleneck = PerSampleBottleneck(model, "stem.1", steps=2, batch_size=3).estimate(torch.randn(16, 1, 16, 16))
        bottleneck.attribute(torch.randn(2, 1, 16, 16), 0)
    finally:
        handle.remove()
    assert 6 in seen  # the user's hook saw the tail run on 3 copies of 2 images, as without the optimisation


def test_masked_feature_normal_equals_pyros_masked_composition():
    from torch.distributions import kl_divergence

    from pyroflows.attribution.distributions import MaskedFeatureNormal

    torch.manual_seed(2)
    loc = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(3, 4, 5, dtype=torch.float64) + 0.1).requires_grad_()
    mu, sigma = torch.randn(4, 5, dtype=torch.float64), torch.rand(4, 5, dtype=torch.float64) + 0.5
    active = torch.rand(4, 5) > 0.3
    ours = MaskedFeatureNormal(loc, scale, active, 2).expand([7, 3]), MaskedFeatureNormal(mu, sigma, active, 2)
    pyros = dist.Normal(loc, scale).mask(active).to_event(2).expand([7, 3]), dist.Normal(mu, sigma).mask(active)
    pyros = pyros[0], pyros[1].to_event(2).expand([7, 3])
    ours = ours[0], ours[1].expand([7, 3])
    kl, expected = kl_divergence(*ours), kl_divergence(*pyros)
    assert kl.shape == (7, 3)
    torch.testing.assert_close(kl, expected)
    grads = torch.autograd.grad(kl.sum(), (loc, scale))
    torch.testing.assert_close(grads, torch.autograd.grad(expected.sum(), (loc, scale)))
    value = ours[0].rsample()
    torch.testing.assert_close(ours[0].log_prob(value), pyros[0].log_prob(value))
    assert ours[0].batch_shape == (7, 3) and ours[0].event_shape == (4, 5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_shared_noise_sample_matches_addcmul_values_and_gradients(channels_last):
    from pyroflows.attribution.distributions import SharedNoiseSample

    torch.manual_seed(4)
    loc, scale = torch.randn(3, 4, 5, 6, dtype=torch.float64), torch.rand(3, 4, 5, 6, dtype=torch.float64) + 0.1
    if channels_last:
        loc, scale = (t.contiguous(memory_format=torch.channels_last) for t in (loc, scale))
    loc.requires_grad_(), scale.requires_grad_()
    eps, weights = torch.randn(7, 1, 4, 5, 6, dtype=torch.float64), torch.randn(7, 3, 4, 5, 6, dtype=torch.float64)
    ours, expected = SharedNoiseSample.apply(loc, scale, eps), torch.addcmul(loc, eps, scale)
    torch.testing.assert_close(ours, expected)
    grads = torch.autograd.grad((ours * weights).sum(), (loc, scale))
    torch.testing.assert_close(grads, torch.autograd.grad((expected * weights).sum(), (loc, scale)))


class _Flagged(nn.Module):
    """A tail that reads a Python flag at call time: torch.fx freezes such state into the graph when it traces."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)
        self.flip = False

    def forward(self, x):
        logits = self.head(torch.relu(self.conv(x)).flatten(1))
        return 50 * logits.flip(-1) if self.flip else logits  # another class's evidence, far more confident


def test_flipping_a_python_flag_changes_the_maps_as_on_the_hook_path():
    torch.manual_seed(0)
    model = _Flagged().eval()
    data, inputs = torch.randn(64, 1, 8, 8), torch.randn(2, 1, 8, 8)
    maps = {}
    for graph in (True, False):
        bottleneck = PerSampleBottleneck(model, "conv", steps=5, beta=1, graph_split=graph).estimate(data)
        assert bottleneck.split.mode == ("graph" if graph else "rerun")
        for flip in (False, True):
            model.flip = flip
            pyro.set_rng_seed(1)
            maps[graph, flip] = bottleneck.attribute(inputs, 0)
        model.flip = False
    scale = float(maps[False, True].abs().max())
    # The flag moves the maps by far more than rounding ...
    assert float((maps[False, True] - maps[False, False]).abs().max()) > 1e-2 * scale
    # ... and the graph split follows it as the hook path does, up to float32 rounding between the two paths.
    for flip in (False, True):
        torch.testing.assert_close(maps[True, flip], maps[False, flip], rtol=1e-5, atol=1e-5 * scale)


def test_a_model_whose_state_did_not_change_is_traced_once(monkeypatch):
    import pyroflows.attribution.layers as layers  # where LayerSplit traces

    traces = []
    real = layers._LeafTracer.trace
    monkeypatch.setattr(layers._LeafTracer, "trace", lambda self, root: traces.append(1) or real(self, root))
    model = _Flagged().eval()
    bottleneck = PerSampleBottleneck(model, "conv", steps=2, beta=1).estimate(torch.randn(32, 1, 8, 8))
    for _ in range(3):
        bottleneck.attribute(torch.randn(2, 1, 8, 8), 0)
    assert len(traces) == 1  # the construction's trace, checked against the model at each call
    model.flip = True
    bottleneck.attribute(torch.randn(2, 1, 8, 8), 0)
    assert len(traces) == 2 and bottleneck.split.mode == "graph"  # traced again once the outputs disagreed


@pytest.mark.parametrize("edit", ["in_place", "through_data", "replaced"])
def test_the_kept_optimised_tail_follows_the_weights_however_they_are_changed(edit):
    model = _batch_norm_net().eval()
    data, inputs, target = torch.randn(64, 1, 16, 16), torch.randn(3, 1, 16, 16), torch.tensor([0, 2, 1])
    bottleneck = PerSampleBottleneck(model, "stem.1", steps=5, beta=1).estimate(data)
    bottleneck.attribute(inputs, target)  # builds and keeps the optimised tail
    kept = bottleneck.split._optimized
    pyro.set_rng_seed(3)
    again = bottleneck.attribute(inputs, target)
    assert bottleneck.split._optimized is kept  # same weights: reused, not rebuilt
    with torch.no_grad():  # a new BatchNorm scale: folded into conv1 by the optimised tail
        if edit == "in_place":
            model.bn1.weight.mul_(-3.0)
        elif edit == "through_data":  # no version counter sees this one
            model.bn1.weight.data.mul_(-3.0)
        else:
            model.bn1.weight = nn.Parameter(model.bn1.weight * -3.0)
    pyro.set_rng_seed(3)
    changed = bottleneck.attribute(inputs, target)
    assert bottleneck.split._optimized is not kept and bottleneck.split.optimize_tail
    fresh = PerSampleBottleneck(model, "stem.1", steps=5, beta=1, optimize_tail=False)
    fresh.set_statistics(bottleneck.mean, bottleneck.std, bottleneck.active, bottleneck.n_samples)
    pyro.set_rng_seed(3)
    expected = fresh.attribute(inputs, target)
    scale = float(expected.abs().max())
    assert float((expected - again).abs().max()) > 1e-3 * scale  # the edit moves the maps ...
    torch.testing.assert_close(changed, expected, rtol=1e-4, atol=1e-4 * scale)  # ... and the kept tail followed


def test_out_of_range_targets_and_bad_beta_are_data_errors():
    from pyroflows.errors import DataError

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    bottleneck = PerSampleBottleneck(model, "1", steps=1).estimate(torch.randn(20, 1, 8, 8))
    with pytest.raises(DataError, match=r"target: classes outside 0..2 in rows \[1\]: \[7\]"):
        bottleneck.attribute(torch.randn(2, 1, 8, 8), target=torch.tensor([0, 7]))
    with pytest.raises(DataError, match="class indices"):
        bottleneck.attribute(torch.randn(2, 1, 8, 8), target=torch.tensor([0.5, 1.0]))
    for beta in (float("nan"), float("inf"), -1.0):
        with pytest.raises(DataError, match="beta: expected a finite number >= 0"):
            PerSampleBottleneck(model, "1", beta=beta)


class _SharedConvNet(nn.Module):
    """One convolution called twice (BatchNorm after the first call only), then a linear layer and a BatchNorm1d."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc, self.bn_fc, self.out = nn.Linear(4 * 8 * 8, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.conv(x))  # the same module again, not followed by a BatchNorm
        return self.out(torch.relu(self.bn_fc(self.fc(x.flatten(1)))))


def test_optimize_tail_folds_a_shared_convolution_at_its_own_call_site_only():
    from torch import fx

    from pyroflows.attribution.tail import optimize_tail

    torch.manual_seed(3)
    model = _SharedConvNet().eval()
    with torch.no_grad():
        for bn in (model.bn, model.bn_fc):
            bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.weight.uniform_(0.5, 1.5)
    before = _snapshot(model)
    fast = optimize_tail(fx.symbolic_trace(model), 4)
    kinds = [type(fast.get_submodule(n.target)) for n in fast.graph.nodes if n.op == "call_module"]
    # torch.fx's fuse folded both BatchNorms (conv + bn at the first call, linear + bn_fc); the second call of the
    # convolution still runs the model's own, unfolded module.
    assert nn.BatchNorm2d not in kinds and nn.BatchNorm1d not in kinds and kinds.count(nn.Conv2d) == 2
    second = [n.target for n in fast.graph.nodes if n.op == "call_module" and "conv" in n.target][1]
    assert fast.get_submodule(second).weight is model.conv.weight
    x = torch.randn(5, 4, 8, 8)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
    assert all(not p.requires_grad for p in fast.parameters() if all(p is not q for q in model.parameters()))
    assert _same(_snapshot(model), before)


def test_non_finite_inputs_and_features_name_their_rows():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    data = torch.randn(20, 1, 8, 8)
    data[3, 0, 2, 2] = float("nan")
    with pytest.raises(DataError, match=r"the layer's output holds NaN or infinity: 1 row\(s\) .* rows \[3\]"):
        # graph_split=False: the split's one-time check would run on the NaN batch first and fall back with a warning
        PerSampleBottleneck(model, "1", steps=1, graph_split=False).estimate(data)
    bottleneck = PerSampleBottleneck(model, "1", steps=1).estimate(torch.randn(20, 1, 8, 8))
    inputs = torch.randn(3, 1, 8, 8)
    inputs[1, 0, 0, 0] = float("inf")
    with pytest.raises(DataError, match=r"inputs: 1 row\(s\) hold NaN or inf, e.g. rows \[1\]"):
        bottleneck.attribute(inputs, target=0)
