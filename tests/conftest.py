"""Shared test set-up: a clean Pyro parameter store and a fixed seed for every test; ``--runslow``; one torch thread
for the folders that train small models step by step."""

from __future__ import annotations

from pathlib import Path

import pyro
import pytest
import torch

# On the shared 2-core machine torch's default intra-op threads oversubscribe the cores and make each small training
# step of these folders' tests about 10x slower (tests/diffusion, and tests/cli, which trains DDPMs and flows).
ONE_THREAD_FOLDERS = ("diffusion", "cli")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    # The CLI property suite (tests/cli/test_properties.py) reads this profile: a bounded number of generated
    # cases per command in the default run, many more with --runslow. Other hypothesis tests keep their settings.
    from hypothesis import HealthCheck, settings

    slow = config.getoption("--runslow")
    settings.register_profile(
        "pyroflows-cli",
        max_examples=100 if slow else 12,
        deadline=None,
        derandomize=not slow,  # the default run is the same on every machine; --runslow explores new cases
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow (the benchmarks cover it too)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def _clean_pyro_state(request: pytest.FixtureRequest):
    """A clean parameter store, seed 0, validation on, and float64 as torch's default dtype (float32 for a test
    marked ``float32``), restored afterwards. Module-scoped fixtures are set up before it, under torch's own default
    (float32): they are used only by modules whose tests are marked ``float32``."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32 if request.node.get_closest_marker("float32") else torch.float64)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()
    torch.set_default_dtype(dtype)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(request: pytest.FixtureRequest):
    """One torch thread for the modules in :data:`ONE_THREAD_FOLDERS` (module scope, so their module fixtures too)."""
    folder = Path(request.path).parent.name
    before = torch.get_num_threads()
    if folder in ONE_THREAD_FOLDERS:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
