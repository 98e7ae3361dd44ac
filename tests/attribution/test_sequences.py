"""Bottlenecks on sequences: receptive-field positions, channel layouts, token inputs, padding, reachable layers."""

import warnings

import pytest
import torch
from torch import nn

from pyroflows.attribution import (
    InputBottleneck,
    LayerNotFoundError,
    LayerSplitWarning,
    PerSampleBottleneck,
    ReadoutBottleneck,
    receptive_field_weights,
)
from pyroflows.errors import DataError


class _Spike(nn.Module):
    """A 9-wide triangular detector (no padding), its ReLU, then global max pooling: class 0 sees a spike."""

    def __init__(self, pool: bool = False) -> None:
        super().__init__()
        conv = nn.Conv1d(1, 2, 9, bias=False)
        with torch.no_grad():
            triangle = 1.0 - (torch.arange(9.0) - 4).abs() / 5
            conv.weight.copy_(torch.stack([triangle, 0.1 * triangle.flip(0)])[:, None])
        layers = [conv, nn.ReLU()] + ([nn.MaxPool1d(2)] if pool else [])
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(2, 2))
        with torch.no_grad():
            self.head[2].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
            self.head[2].bias.zero_()

    def forward(self, x):
        return self.head(self.features(x))


def _spikes(positions, length=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.rand(len(positions), 1, length, generator=g)
    for i, p in enumerate(positions):
        x[i, 0, p] = 3.0
    return x


@pytest.mark.parametrize("pool", [False, True])
def test_a_planted_feature_at_position_p_peaks_at_p(pool):
    torch.manual_seed(0)
    model = _Spike(pool).eval()
    layer = "features.2" if pool else "features.1"
    data = torch.cat([_spikes(torch.randint(0, 40, (100,)).tolist(), seed=1), 0.1 * torch.rand(100, 1, 40)])
    bottleneck = PerSampleBottleneck(model, layer, steps=10).estimate(data)
    positions = [6, 13, 20, 27, 30]  # every cell that sees them exists (no border truncation)
    torch.manual_seed(1)
    maps = bottleneck.attribute(_spikes(positions), target=0)
    assert maps.shape == (5, 40)
    if pool:  # cells two positions apart: the peak is found to within the layer's stride
        assert ((maps.argmax(1) - torch.tensor(positions)).abs() <= 1).all()
    else:
        assert maps.argmax(1).tolist() == positions
    # A plain resize of the 32 (or 16) cells would put the peak elsewhere: the mapping is not a resize.
    torch.manual_seed(1)
    cells = bottleneck.attribute(_spikes(positions), target=0, upsample=False)
    resized = torch.nn.functional.interpolate(cells[:, None], size=40, mode="linear", align_corners=False)[:, 0]
    assert resized.argmax(1).tolist() != positions
    # Bits are spread, not created: the input map holds the cells' total.
    torch.testing.assert_close(maps.sum(1), cells.sum(1), rtol=1e-5, atol=1e-6)


def test_receptive_field_of_a_convolution_and_pool_is_its_window():
    model = nn.Sequential(nn.Conv1d(4, 8, 9), nn.ReLU(), nn.MaxPool1d(2))
    weights = receptive_field_weights(model, model[2], torch.randn(32, 4, 40))
    torch.testing.assert_close(weights.sum(1), torch.ones(16))
    for j in range(16):
        support = weights[j].nonzero().flatten()
        assert support.min() >= 2 * j and support.max() <= 2 * j + 9


class _Permute(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 1)


class _Layouts(nn.Module):
    """The same network with its ReLU features also exposed channels-last (``last``) and moved back."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv1d(4, 6, 5, padding=2)
        self.relu = nn.ReLU()
        self.last = _Permute()
        self.back = _Permute()
        self.head = nn.Sequential(nn.Conv1d(6, 6, 3), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(self.back(self.last(self.relu(self.conv(x)))))


@pytest.mark.parametrize("graph_split", [True, False])
def test_channels_last_equals_channels_first_on_the_same_features(graph_split):
    model = _Layouts().eval()
    data, x = torch.randn(64, 4, 20), torch.randn(3, 4, 20)
    maps = []
    for layer, channel_dim in (("relu", 1), ("last", -1), ("last", 2)):
        torch.manual_seed(0)
        b = PerSampleBottleneck(model, layer, channel_dim=channel_dim, graph_split=graph_split).estimate(data)
        maps.append(b.attribute(x, target=1))
        if channel_dim != 1:
            layer_out = b.attribute(x, target=1, output="layer")
            assert layer_out.shape == (3, 20, 6)  # the layer's own layout
    torch.testing.assert_close(maps[1], maps[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps[2], maps[0], rtol=1e-5, atol=1e-7)


class _Tokens(nn.Module):
    """Embedding, one transformer encoder layer (batch-first), max over unpadded tokens."""

    def __init__(self, vocab: int = 12, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.embedding = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(width, 3)

    def forward(self, tokens, padding=None):
        padding = tokens == 0 if padding is None else padding
        hidden = self.enc(self.embedding(tokens), src_key_padding_mask=padding)
        return self.out(hidden.masked_fill(padding[..., None], -1e4).amax(1))


def _token_batch(n, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 12, (n, length), generator=g)
    lengths = torch.randint(4, length + 1, (n,), generator=g)
    padding = torch.arange(length)[None] >= lengths[:, None]
    return tokens.masked_fill(padding, 0), padding


def test_layers_inside_a_transformer_encoder_fall_back_to_hooks_and_give_per_token_maps():
    model = _Tokens().eval()
    tokens, padding = _token_batch(40)
    with pytest.warns(LayerSplitWarning, match="cannot be split at 'enc.layers.0'"):
        b = PerSampleBottleneck(model, "enc.layers.0", channel_dim=-1, padding_mask=0)
    assert b.split.mode == "rerun"
    b.estimate(tokens, additional_forward_args=(padding,))
    maps = b.attribute(tokens[:4], 1, additional_forward_args=(padding[:4],))
    assert maps.shape == (4, 10) and (maps >= 0).all()
    assert (maps[padding[:4]] == 0).all() and (maps[~padding[:4]] > 0).any()
    with pytest.raises(LayerNotFoundError, match="no layer named 'enc.layers.5'"):
        PerSampleBottleneck(model, "enc.layers.5")
    assert issubclass(LayerNotFoundError, DataError)


def test_padding_is_left_out_of_the_statistics_and_does_not_change_the_maps():
    model = _Tokens().eval()
    tokens, padding = _token_batch(60, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerSplitWarning)
        b = PerSampleBottleneck(model, "embedding", channel_dim=-1, padding_mask=0)
    b.estimate(tokens, additional_forward_args=(padding,))
    embedded = model.embedding(tokens).detach().permute(0, 2, 1)  # [N, C, L]
    keep = (~padding)[:, None, :].expand_as(embedded)
    for position in (3, 9):
        rows = keep[:, 0, position]
        torch.testing.assert_close(b.mean[:, position].to(embedded.dtype), embedded[rows, :, position].mean(0))
    # Other token ids at the padded positions: the same maps (the model ignores them, so does the bottleneck).
    x, pad = tokens[:5], padding[:5]
    other = x.masked_fill(pad, 7)
    torch.manual_seed(1)
    first = b.attribute(x, 0, additional_forward_args=(pad,))
    torch.manual_seed(1)
    second = b.attribute(other, 0, additional_forward_args=(pad,))
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-7)
    assert (first[pad] == 0).all()
    with pytest.warns(LayerSplitWarning, match="cannot be split at 'embedding'"):  # forward takes the padding too
        callable_mask = PerSampleBottleneck(model, "embedding", channel_dim=-1, padding_mask=lambda t, a: t == 0)
    callable_mask.set_statistics(b.mean, b.std, b.active, b.n_samples)
    torch.manual_seed(1)
    torch.testing.assert_close(callable_mask.attribute(x, 0), first, rtol=1e-4, atol=1e-6)


def test_wrong_channel_dim_and_bad_padding_masks_are_refused_with_hooks_and_modes_restored():
    model = _Tokens().train()
    tokens, padding = _token_batch(20)
    flags = [p.requires_grad for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerSplitWarning)
        wrong = PerSampleBottleneck(model, "enc.layers.0")  # channel_dim=1 reads [N, L, C] as [N, C, L]
        with pytest.raises(DataError, match="pass channel_dim=-1"):
            wrong.estimate(tokens, additional_forward_args=(padding,))
        with pytest.raises(DataError, match="channel_dim=3 does not name a feature axis"):
            PerSampleBottleneck(model, "enc.layers.0", channel_dim=3).estimate(tokens)
        with pytest.raises(DataError, match="channel_dim must be a non-zero integer"):
            PerSampleBottleneck(model, "enc.layers.0", channel_dim=0)
        b = PerSampleBottleneck(model, "enc.layers.0", channel_dim=-1, padding_mask=0)
        with pytest.raises(DataError, match="padding_mask=0 indexes additional_forward_args"):
            b.estimate(tokens)
        b.estimate(tokens, additional_forward_args=(padding,))
        with pytest.raises(DataError, match="boolean tensor"):
            b.attribute(tokens[:2], 0, additional_forward_args=(padding[:2].int(),))
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_readout_and_input_bottleneck_on_channels_last_tokens():
    model = _Tokens().eval()
    tokens, padding = _token_batch(64, seed=4)
    labels = model(tokens, padding).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerSplitWarning)
        readout = ReadoutBottleneck(model, "enc.layers.0", ["enc.layers.0", "enc.layers.1"], channel_dim=-1,
                                    padding_mask=lambda t, a: t == 0)  # fmt: skip
        readout.estimate(tokens)
        readout.fit(list(zip(tokens.split(16), labels.split(16), strict=True)), epochs=1)
        maps = readout.attribute(tokens[:3])
        assert maps.shape == (3, 10) and (maps[padding[:3]] == 0).all()
        inputs = InputBottleneck(model, "enc.layers.0", channel_dim=-1, padding_mask=0, steps=3, input_steps=3)
        inputs.estimate(tokens, additional_forward_args=(padding,))
        fine = inputs.attribute(tokens[:3], labels[:3], additional_forward_args=(padding[:3],))
    assert fine.shape == (3, 10) and (fine >= 0).all() and (fine[padding[:3]] == 0).all()
