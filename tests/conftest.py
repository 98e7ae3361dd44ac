"""Shared test set-up: a clean Pyro parameter store and a fixed seed for every test; ``--runslow``."""

from __future__ import annotations

import pyro
import pytest


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
def _clean_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()
