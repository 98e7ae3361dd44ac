"""The cluttered-digits generator, the bounding-box score and the bundled CNN."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from pyroflows.datasets import make_cluttered_digits
from pyroflows.datasets.cluttered_digits import _source_pool
from pyroflows.errors import CheckpointError, DataError
from pyroflows.evaluation import bounding_box_score
from pyroflows.zoo import (
    BUNDLED_TEST_ACCURACY,
    BUNDLED_WEIGHTS,
    DigitCNN,
    KeywordTransformer,
    MotifCNN,
    load_bundled_model,
    load_keyword_model,
    load_motif_model,
)
from pyroflows.zoo.train_digits import accuracy


def test_generator_is_deterministic_and_splits_differ():
    a = make_cluttered_digits(20, split="test", seed=3)
    b = make_cluttered_digits(20, split="test", seed=3)
    c = make_cluttered_digits(20, split="train", seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.dtype == torch.float32 and a.labels.dtype == torch.long and a.boxes.dtype == torch.long
    assert a.images.min() >= 0 and a.images.max() <= 1


def test_source_pools_are_disjoint():
    train, _ = _source_pool("train")
    test, _ = _source_pool("test")
    assert len(train) + len(test) == 1797
    flat_train = {tuple(np.round(d.numpy().ravel(), 5)) for d in train}
    assert not any(tuple(np.round(d.numpy().ravel(), 5)) in flat_train for d in test)


def test_boxes_hold_the_digit_and_cover_at_most_a_third():
    data = make_cluttered_digits(200, split="train", seed=1)
    top, left, bottom, right = data.boxes.unbind(1)
    area = (bottom - top) * (right - left)
    assert (area > 0).all() and (area <= 56 * 56 / 3).all()
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= 56).all() and (right <= 56).all()
    # The digit is pasted by pixel-wise maximum, so the box always holds its bright strokes.
    inside = data.images[:, 0] * data.masks()
    assert (inside.flatten(1).max(1).values > 0.5).all()


def test_dataset_protocol_and_loader():
    data = make_cluttered_digits(10, split="test")
    assert len(data) == 10
    x, y = data[3]
    assert x.shape == (1, 56, 56) and int(y) == int(data.labels[3])
    batches = list(data.loader(batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]


@pytest.mark.parametrize(
    "kwargs, match", [({"n": 0}, "positive"), ({"n": 2, "split": "val"}, "split"), ({"n": 2, "size": 30}, "third")]
)
def test_generator_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_cluttered_digits(**kwargs)


def test_bounding_box_score_known_cases():
    boxes = torch.tensor([[0, 0, 2, 2], [2, 2, 4, 4]])
    perfect = torch.zeros(2, 4, 4)
    perfect[0, :2, :2] = 1
    perfect[1, 2:, 2:] = 1
    assert torch.equal(bounding_box_score(perfect, boxes), torch.tensor([1.0, 1.0]))
    assert torch.equal(bounding_box_score(-perfect + torch.rand(2, 4, 4) * 0.1, boxes), torch.tensor([0.0, 0.0]))
    # Against a direct numpy transcription of the definition (Quantus' RelevanceRankAccuracy).
    maps, boxes = torch.rand(50, 12, 12), torch.tensor([[1, 2, 6, 9]]).repeat(50, 1)
    mask = np.zeros((12, 12), bool)
    mask[1:6, 2:9] = True
    expected = [np.isin(np.argsort(m.numpy().ravel())[-35:], np.flatnonzero(mask)).mean() for m in maps]
    assert np.allclose(bounding_box_score(maps, boxes).numpy(), expected)
    # batch == one at a time
    one = torch.cat([bounding_box_score(maps[i : i + 1], boxes[i : i + 1]) for i in range(50)])
    assert torch.equal(one, bounding_box_score(maps, boxes))


def test_bounding_box_score_errors():
    with pytest.raises(DataError, match="boxes has shape"):
        bounding_box_score(torch.rand(2, 4, 4), torch.tensor([[0, 0, 2, 2]]))
    with pytest.raises(DataError, match="outside"):
        bounding_box_score(torch.rand(1, 4, 4), torch.tensor([[0, 0, 5, 2]]))
    with pytest.raises(DataError, match="empty"):
        bounding_box_score(torch.rand(1, 4, 4), torch.tensor([[2, 0, 2, 2]]))
    with pytest.raises(DataError, match=r"\[N, H, W\]"):
        bounding_box_score(torch.rand(4, 4), torch.tensor([[0, 0, 2, 2]]))


def test_bundled_model_classifies_held_out_digits_with_the_reported_accuracy():
    model = load_bundled_model()
    assert not model.training
    assert sum(p.numel() * 4 for p in model.parameters()) < 1_000_000
    test = make_cluttered_digits(2000, split="test", seed=0)
    # The figure printed by the training script, on the same images. Another CPU rounds the logits differently
    # (about 1e-6), which can flip an image whose two best logits tie that closely: allow one image of 2,000.
    assert accuracy(model, test.images, test.labels) == pytest.approx(BUNDLED_TEST_ACCURACY, abs=1 / 2000 + 1e-9)


def test_digit_cnn_layers_are_addressable_modules():
    model = DigitCNN()
    names = dict(model.named_modules())
    assert isinstance(names["features.4"], torch.nn.ReLU) and not names["features.4"].inplace
    assert not any(isinstance(m, torch.nn.ReLU) and m.inplace for m in model.modules())


@pytest.mark.parametrize(
    ("cls", "load"),
    [(DigitCNN, load_bundled_model), (MotifCNN, load_motif_model), (KeywordTransformer, load_keyword_model)],
)
def test_zoo_models_save_and_load_exactly_through_the_checkpoint_protocol(tmp_path, cls, load):
    shipped = load()
    path = shipped.save(tmp_path / "model.pt")
    again = cls.load(path)
    assert again.config == shipped.config and type(again) is cls
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in shipped.state_dict().items())
    with pytest.raises(DataError, match="already exists"):
        shipped.save(path)
    with pytest.raises(CheckpointError, match="expected a"):
        (DigitCNN if cls is not DigitCNN else MotifCNN).load(path)


def test_old_import_paths_still_work_and_attribution_does_not_import_the_zoo():
    import pyroflows.attribution as attribution

    assert attribution.load_bundled_model is load_bundled_model and attribution.DigitCNN is DigitCNN
    assert BUNDLED_WEIGHTS.parent.name == "weights" and BUNDLED_WEIGHTS.parent.parent.name == "zoo"
    code = "import sys, pyroflows.attribution, pyroflows.evaluation; print('pyroflows.zoo' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
