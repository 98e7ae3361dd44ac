"""One invariant suite over every registered method, the bottlenecks included, and Captum's own tools on them."""

import warnings

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from pyroflows.attribution import InputBottleneck, LayerSplitWarning, PerSampleBottleneck, ReadoutBottleneck
from pyroflows.errors import DataError
from pyroflows.evaluation import METHODS, MethodContext, make_attribute_fn, make_attribution

from ._models import images, tiny_cnn


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _seq_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(4, 6, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(6, 6, 3), nn.ReLU(), nn.AdaptiveMaxPool1d(1),
        nn.Flatten(), nn.Linear(6, 2),
    ).eval()  # fmt: skip


class _TinyTokens(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.embedding = nn.Embedding(10, 8)
        # Without positions a repeated token gives tied hidden states, and the gradient of amax over an exact tie
        # goes wherever the kernels' rounding puts the maximum (batched and single calls differed with 2 threads).
        self.position = nn.Parameter(torch.randn(7, 8))
        self.enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 1, enable_nested_tensor=False
        )
        self.out = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.out(self.enc(self.embedding(tokens) + self.position[: tokens.shape[1]]).amax(1))


def _image_case():
    context = MethodContext(layer="1", data=images(40, seed=5), options={"steps": 3, "input_steps": 3})
    return tiny_cnn(side=16), images(3), torch.tensor([2, 0, 1]), context


def _float32_image_case():
    """The image case with a float32 model and images while torch's default dtype is float64 (the tests' default):
    a tensor a method builds in the default dtype instead of the input's shows here."""
    model, _, target, context = _image_case()
    context.data = images(40, seed=5, dtype=torch.float32)
    return model.float(), images(3, dtype=torch.float32), target, context


def _sequence_case():
    g = torch.Generator().manual_seed(2)

    def onehot(n):
        bases = torch.randint(0, 4, (n, 24), generator=g)
        return nn.functional.one_hot(bases, 4).permute(0, 2, 1).to(torch.get_default_dtype())

    context = MethodContext(layer="1", data=onehot(40), options={"steps": 3, "input_steps": 3, "window": 3})
    return _seq_cnn(), onehot(3), torch.tensor([1, 0, 1]), context


def _token_case():
    g = torch.Generator().manual_seed(3)
    context = MethodContext(
        layer="enc.layers.0", data=torch.randint(1, 10, (40, 7), generator=g), channel_dim=-1,
        embedding="embedding", options={"steps": 3, "input_steps": 3, "window": 1, "n_steps": 8, "pad": 0},
    )  # fmt: skip
    return _TinyTokens().eval(), torch.randint(1, 10, (3, 7), generator=g), torch.tensor([0, 2, 1]), context


# Every registered method runs on images (a new member is picked up here); the sequence and token lists name the
# methods that handle those inputs.
IMAGE = list(METHODS.names())
SEQUENCE = ["random", "saliency", "integrated-gradients", "deeplift", "gradient-x-input", "occlusion", "grad-cam",
            "per-sample", "input-bottleneck"]  # fmt: skip
TOKENS = ["random", "saliency", "integrated-gradients", "gradient-x-input", "occlusion", "per-sample",
          "input-bottleneck"]  # fmt: skip
CASES = [("image", m) for m in IMAGE] + [("sequence", m) for m in SEQUENCE] + [("tokens", m) for m in TOKENS]
# Captum 0.9's NoiseTunnel draws its noise with torch.tensor(stdev), in torch's default dtype: float64 noise on float32
# images meets the float32 model.
_CAPTUM_NOISE = pytest.mark.xfail(strict=True, raises=RuntimeError, reason="Captum's NoiseTunnel: default-dtype noise")
CASES += [pytest.param("image-float32", m, marks=_CAPTUM_NOISE) if m == "smoothgrad" else ("image-float32", m)
          for m in IMAGE]  # fmt: skip
BUILD = {"image": _image_case, "sequence": _sequence_case, "tokens": _token_case, "image-float32": _float32_image_case}


@pytest.mark.parametrize(("case", "name"), CASES)
def test_every_method_keeps_the_invariants(case, name):
    model, x, target, context = BUILD[case]()
    if name == "readout":  # an untrained readout on this model: the contract, not the maps' quality
        context.readout = ReadoutBottleneck(model, context.layer, [context.layer, "4"]).estimate(context.data)
    model.train()
    model.get_submodule(next(n for n, _ in model.named_modules() if n)).eval()  # a deliberately mixed mode
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    context.seed = 4
    attribute = make_attribute_fn(name, context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerSplitWarning)
        batched = attribute(model, x, target)
        again = attribute(model, x, target)
        singles = [attribute(model, x[i : i + 1], target[i : i + 1])[0] for i in range(len(x))]
    positions = tuple(x.shape[1:]) if case == "tokens" else tuple(x.shape[2:])
    assert batched.shape == (len(x), *positions) and torch.isfinite(batched).all() and not batched.requires_grad
    if x.is_floating_point():
        assert batched.dtype == x.dtype, f"{name}: maps in {batched.dtype} for {x.dtype} inputs"
    torch.testing.assert_close(again, batched)  # seeded
    if name not in ("random", "smoothgrad"):  # their noise is drawn for the whole batch
        for i, single in enumerate(singles):  # batched == one at a time (float tolerance)
            torch.testing.assert_close(single, batched[i], rtol=1e-3, atol=1e-5)
    assert _hooks(model) == 0
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_registry_members_are_captum_attributions():
    from captum.attr import Attribution

    model, x, target, context = _image_case()
    for name in ("saliency", "per-sample", "input-bottleneck", "occlusion-8", "random"):
        method = make_attribution(name, model, context)
        assert isinstance(method, Attribution) and method.has_convergence_delta() is False
        assert method.attribute(x, target=target).shape == (3, 16, 16)


def _bottlenecks():
    model, x, target, context = _sequence_case()
    per_sample = PerSampleBottleneck(model, "1", steps=3).estimate(context.data)
    inputs = InputBottleneck(model, "1", steps=2, input_steps=2).estimate(context.data)
    return model, x, target, [per_sample, inputs]


def test_bottlenecks_run_inside_noise_tunnel_with_tuple_inputs_and_input_shaped_output():
    model, x, target, methods = _bottlenecks()
    for method in methods:
        torch.manual_seed(0)
        smooth = NoiseTunnel(method).attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=target)
        assert smooth.shape == (3, 24) and torch.isfinite(smooth).all() and (smooth >= 0).all()
        (as_tuple,) = method.attribute((x,), target=target, output="input")
        assert as_tuple.shape == x.shape
        # The map is repeated over the input's channels.
        torch.testing.assert_close(as_tuple[:, 0], as_tuple[:, 3])


def test_bottlenecks_with_captum_infidelity_and_sensitivity_max():
    model, x, target, methods = _bottlenecks()

    def perturb(inputs):
        noise = 0.05 * torch.randn_like(inputs)
        return noise, inputs - noise

    for method in methods:
        torch.manual_seed(0)
        attributions = method.attribute(x, target=target, output="input")
        score = infidelity(model, perturb, x, attributions, target=target, n_perturb_samples=4)
        assert score.shape == (3,) and torch.isfinite(score).all()
        sens = sensitivity_max(
            lambda inputs, method=method, **kw: method.attribute(inputs, output="input", **kw),
            x,
            target=target,
            n_perturb_samples=2,
        )
        assert sens.shape == (3,) and torch.isfinite(sens).all() and (sens >= 0).all()


def test_an_option_no_method_takes_is_an_error_naming_it_and_the_accepted_ones():
    model, x, target, context = _image_case()
    with pytest.raises(DataError, match=r"per-sample: unknown option 'bata'; it takes .*beta.*steps"):
        make_attribute_fn("per-sample", context, bata=3.0)
    with pytest.raises(DataError, match=r"saliency: unknown option 'n_steps'; it takes no options"):
        make_attribution("saliency", model, n_steps=3)  # an explicit option must be the method's own
    context.options["windw"] = 3
    with pytest.raises(DataError, match=r"occlusion: unknown option 'windw' in context.options; it takes window"):
        make_attribute_fn("occlusion", context)
    # An option of another method in a shared context is left alone (an evaluation runs many methods on one context).
    context.options.pop("windw")
    assert make_attribute_fn("saliency", context)(model, x, target).shape == (3, 16, 16)


def test_every_member_declares_its_options_and_a_help_text():
    assert METHODS.default == "per-sample"
    for name in METHODS:
        entry = METHODS.get(name)
        assert entry.help and all(isinstance(option, str) for option in entry.factory.options), name
    assert "beta" in METHODS.get("per-sample").factory.options and "window" in METHODS.get("occlusion").factory.options
