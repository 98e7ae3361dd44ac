"""Class labels and classifier-free guidance: the guided prediction's formula, w = 0 is the conditional model,
training with label dropout, persistence, bad labels."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

from pyroflows.diffusion import DDPM, ancestral_sample, ddim_sample, sample, train
from pyroflows.errors import DataError


def _fitted(num_classes=3, network="mlp", **kwargs):
    ddpm = DDPM(2, steps=4, num_classes=num_classes, network=network, **kwargs)
    ddpm.scaler.fit(torch.randn(50, 2))
    return ddpm


@pytest.mark.parametrize("network", ["mlp", "post"])
@pytest.mark.parametrize("parameterization", ["v", "eps"])
def test_guided_noise_is_the_classifier_free_mixture(network, parameterization):
    ddpm = _fitted(network=network, parameterization=parameterization)
    x, t = torch.randn(6, 2), torch.tensor([1, 2, 3, 4, 1, 2])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        conditional = ddpm.predict_noise(x, t, labels)
        unconditional = ddpm.predict_noise(x, t, torch.full((6,), ddpm.null_label))
        for w in (0.5, 3.0):
            guided = ddpm.predict_noise(x, t, labels, guidance=w)
            assert torch.allclose(guided, (1 + w) * conditional - w * unconditional, atol=1e-5)
        # w = 0 is the conditional model itself, bit for bit
        assert torch.equal(ddpm.predict_noise(x, t, labels, guidance=0.0), conditional)
        # no labels = the null label
        assert torch.equal(ddpm.predict_noise(x, t), unconditional)
        # the labels change the prediction
        assert not torch.allclose(conditional, unconditional)


def test_guidance_zero_sampling_is_the_conditional_models_chain():
    ddpm = _fitted()
    labels = torch.tensor([0, 1, 2, 1])
    pyro.set_rng_seed(3)
    guided = ancestral_sample(ddpm, 4, labels=labels, guidance=0.0, denoise_last=False)
    pyro.set_rng_seed(3)
    plain = ancestral_sample(ddpm, 4, labels=labels, denoise_last=False)
    assert torch.equal(guided, plain)
    # the Pyro model's sites under the same labels: replay its latent path through the sampler's mean function
    trace = poutine.trace(ddpm.model).get_trace(num_samples=4, labels=labels, guidance=0.0)
    for t in range(ddpm.steps, 0, -1):
        site = trace.nodes[f"x_{t - 1}"]
        expected = ddpm.reverse_mean(trace.nodes[f"x_{t}"]["value"], t, labels)
        assert torch.equal(site["fn"].base_dist.loc, expected)
    assert ddim_sample(ddpm, 4, labels=1, guidance=2.0).shape == (4, 2)
    assert sample(ddpm, 4, labels=1, guidance=2.0, sampler="ddim", sampling_steps=2).shape == (4, 2)


def test_training_with_labels_separates_the_classes():
    pyro.set_rng_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    centres = np.array([[-2.0, 0.0], [2.0, 1.0]])
    x = centres[labels] + 0.3 * rng.standard_normal((400, 2))
    ddpm = DDPM(2, steps=10, num_classes=2)
    train(ddpm, x, labels=labels, epochs=400, progress=False, seed=0)
    for label in (0, 1):
        draws = ancestral_sample(ddpm, 500, labels=label).numpy()
        nearest = np.argmin(((draws[:, None] - centres) ** 2).sum(-1), axis=1)
        assert (nearest == label).mean() > 0.95
    # the null label draws both classes
    nearest = np.argmin(((ancestral_sample(ddpm, 1000).numpy()[:, None] - centres) ** 2).sum(-1), axis=1)
    assert 0.3 < nearest.mean() < 0.7
    # the class-conditional bound is lower under the right label than under the wrong one
    right = ddpm.nll(x[:200], labels=labels[:200], num_particles=2).nll
    wrong = ddpm.nll(x[:200], labels=1 - labels[:200], num_particles=2).nll
    assert right < wrong - 1.0


def test_elbo_training_with_labels_runs():
    ddpm = DDPM(2, steps=3, num_classes=2)
    history = train(ddpm, torch.randn(32, 2), labels=torch.randint(0, 2, (32,)), loss="elbo", epochs=3,
                    progress=False)  # fmt: skip
    assert len(history) == 3 and np.isfinite(history).all()


def test_save_load_is_exact_with_classes(tmp_path):
    ddpm = _fitted(num_classes=4)
    ddpm.save(tmp_path / "m.pt")
    again = DDPM.load(tmp_path / "m.pt")
    assert again.num_classes == 4 and again.config == ddpm.config
    for (k, a), (_, b) in zip(ddpm.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    pyro.set_rng_seed(1)
    first = ancestral_sample(ddpm, 5, labels=[0, 1, 2, 3, 1], guidance=1.5)
    pyro.set_rng_seed(1)
    assert torch.equal(first, ancestral_sample(again, 5, labels=[0, 1, 2, 3, 1], guidance=1.5))


def test_bad_labels():
    ddpm = _fitted(num_classes=3)
    x = torch.randn(4, 2)
    with pytest.raises(DataError, match=r"labels: expected labels in 0\.\.2 .* got 3 in row 1"):
        train(ddpm, x, labels=[0, 3, 1, 2], epochs=1, progress=False)
    with pytest.raises(DataError, match="got -1 in row 0"):
        sample(ddpm, 2, labels=[-1, 0])
    with pytest.raises(DataError, match=r"expected 4 label\(s\), one per row, got shape \(3,\)"):
        train(ddpm, x, labels=[0, 1, 2], epochs=1, progress=False)
    with pytest.raises(DataError, match=r"NaN or inf, e.g. rows \[2\]"):
        train(ddpm, x, labels=[0, 1, float("nan"), 2], epochs=1, progress=False)
    with pytest.raises(DataError, match="must be integers"):
        ddpm.nll(x, labels=[0, 1.5, 1, 2])
    with pytest.raises(DataError, match="pass labels"):
        train(ddpm, x, epochs=1, progress=False)
    with pytest.raises(ValueError, match="label_dropout"):
        train(ddpm, x, labels=[0, 1, 1, 2], label_dropout=1.0, epochs=1, progress=False)
    plain = _fitted(num_classes=0)
    with pytest.raises(DataError, match="no classes"):
        sample(plain, 2, labels=0)
    with pytest.raises(ValueError, match="guidance"):
        sample(plain, 2, guidance=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        DDPM(2, network_kwargs={"num_classes": 2})
    with pytest.raises(ValueError, match="num_classes"):
        DDPM(2, num_classes=-1)


def test_conditioning_the_data_units_site_or_a_partial_x0_raises_with_advice():
    ddpm = _fitted(num_classes=0)
    with pytest.raises(DataError, match="x: the data-units site is deterministic.*impute"):
        poutine.condition(ddpm.model, data={"x": torch.zeros(4, 2)})(num_samples=4)
    with pytest.raises(DataError, match=r"x_0: expected shape \(4, 2\).*impute"):
        poutine.condition(ddpm.model, data={"x_0": torch.zeros(4, 1)})(num_samples=4)
    with pytest.raises(DataError, match="x_0: the conditioned value holds NaN.*impute"):
        poutine.condition(ddpm.model, data={"x_0": torch.tensor([[0.0, float("nan")]] * 4)})(num_samples=4)
    # conditioning x_0 on whole rows (scaled units) is the observed model, as model(x0=...) in data units
    y0 = torch.rand(4, 2) * 2 - 1
    conditioned = poutine.trace(poutine.condition(ddpm.model, data={"x_0": y0})).get_trace(num_samples=4)
    assert conditioned.nodes["x_0"]["is_observed"] and torch.equal(conditioned.nodes["x_0"]["value"], y0)
    assert torch.allclose(conditioned.nodes["x"]["value"], ddpm.scaler.inverse(y0))


def test_default_label_dropout_is_the_constant_and_drops_that_fraction(monkeypatch):
    """``train``'s default rate is ``DEFAULT_LABEL_DROPOUT`` (the one home the CLI reads too), and it is the fraction
    of rows whose label becomes the null label: over 4,000 row-steps the binomial sd is under 0.008, so 0.03 is
    about 4 sd."""
    import inspect

    from pyroflows.diffusion import training

    assert inspect.signature(train).parameters["label_dropout"].default == training.DEFAULT_LABEL_DROPOUT
    seen = []
    real_step = training._svi_step

    def recording_step(svi, x_batch, y_batch):
        seen.append(y_batch.clone())
        return real_step(svi, x_batch, y_batch)

    monkeypatch.setattr(training, "_svi_step", recording_step)
    ddpm = DDPM(2, steps=2, num_classes=2)
    labels = torch.arange(2000) % 2
    train(ddpm, torch.randn(2000, 2), labels=labels, epochs=2, batch_size=1000, progress=False, seed=0)
    dropped = torch.cat(seen) == ddpm.null_label
    assert len(seen) == 4 and dropped.numel() == 4000
    assert abs(dropped.double().mean().item() - training.DEFAULT_LABEL_DROPOUT) < 0.03
