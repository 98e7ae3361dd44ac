"""The bounding-box score (from pyroflows.attribution's helper) against Quantus' RelevanceRankAccuracy."""

import numpy as np
import pytest
import torch

from pyroflows.errors import DataError
from pyroflows.evaluation import bounding_box_score

from ._models import images, tiny_cnn


def _boxes(n: int, side: int, generator: torch.Generator) -> torch.Tensor:
    top_left = torch.randint(0, side // 2, (n, 2), generator=generator)
    size = torch.randint(2, side // 2, (n, 2), generator=generator)
    return torch.cat([top_left, top_left + size], dim=1)


def test_equals_quantus_relevance_rank_accuracy():
    quantus = pytest.importorskip("quantus")
    generator = torch.Generator().manual_seed(0)
    n, side = 12, 16
    x, model = images(n, side=side), tiny_cnn(side=side)
    maps = torch.rand(n, side, side, generator=generator)  # continuous: no ties for the two to break differently
    boxes = _boxes(n, side, generator)
    masks = np.zeros((n, 1, side, side), dtype=np.float32)
    for i, (top, left, bottom, right) in enumerate(boxes.tolist()):
        masks[i, 0, top:bottom, left:right] = 1
    # A map that is high inside the box, so the scores spread over [0, 1] instead of sitting near the box's share.
    maps = maps + torch.from_numpy(masks[:, 0]) * torch.rand(n, 1, 1, generator=generator)
    expected = quantus.RelevanceRankAccuracy(abs=False, normalise=False, disable_warnings=True)(
        model=model,
        x_batch=x.numpy(),
        y_batch=np.zeros(n, dtype=np.int64),
        a_batch=maps[:, None].numpy(),
        s_batch=masks,
        channel_first=True,
    )
    ours = bounding_box_score(maps, boxes)
    np.testing.assert_allclose(ours.numpy(), np.asarray(expected), atol=1e-6)
    assert ours.min() < 0.5 < ours.max()


def test_boxes_outside_the_image_and_mismatched_shapes_are_rejected():
    maps = torch.rand(2, 8, 8)
    with pytest.raises(DataError, match="outside"):
        bounding_box_score(maps, torch.tensor([[0, 0, 4, 4], [4, 4, 9, 8]]))
    with pytest.raises(DataError, match=r"expected \[2, 4\]"):
        bounding_box_score(maps, torch.tensor([[0, 0, 4, 4]]))
