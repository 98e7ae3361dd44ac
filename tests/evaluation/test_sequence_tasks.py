"""The shipped sequence tasks' set-ups: the keyword task's data, and a readout that trains on every seed."""

import pytest
import torch

from pyroflows.evaluation import top1_hit
from pyroflows.evaluation.sequence_tasks import sequence_task, train_readout


def test_keyword_task_explains_keyword_sequences_and_estimates_on_the_training_mix():
    setup = sequence_task("keywords", n=8, estimation=300)
    assert (setup.target < 4).all() and ((setup.spans[:, 1] - setup.spans[:, 0]) == 1).all()
    null = setup.train_labels == 4
    assert 30 < int(null.sum()) < 90  # a fifth of 300 (60, sd 6.9)
    assert not ((setup.train_inputs[null] >= 1) & (setup.train_inputs[null] <= 4)).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_motif_readout_trains_instead_of_closing_everywhere(seed):
    # With the information loss at full weight after one epoch of eight, both seeds collapsed to the mask that passes
    # nothing (0 bits, top-1 0.05 and 0.20 on these sequences); rising over half the epochs, they find the motif.
    setup = sequence_task("motifs", n=20, estimation=1000, seed=seed)
    readout = train_readout(setup, seed=seed)
    maps = readout.attribute(setup.inputs)
    assert float(maps.sum(1).min()) > 10.0  # bits per sequence
    assert float(top1_hit(maps, setup.spans).mean()) >= 0.9  # random: 0.07
    assert torch.isfinite(torch.tensor(readout.history)).all()
