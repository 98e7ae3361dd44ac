"""One torch thread for the diffusion tests: on the shared 2-core machine, torch's default intra-op threads
oversubscribe the cores and make each small training step 10x slower."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
