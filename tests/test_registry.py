"""``pyroflows.registry.Registry``: registration rules, the default, lookups that name the choices; and every
registry of the package keeps the contract (a default, a help text per member, CLI-safe names)."""

import re

import pytest

from pyroflows.errors import DataError
from pyroflows.registry import Registry


def test_the_first_member_is_the_default_until_one_claims_it():
    colours = Registry("colour")
    with pytest.raises(LookupError, match="colour: nothing registered"):
        colours.default  # noqa: B018 - the property raises
    colours.register("red", str.upper, "loud")
    assert colours.default == "red"
    colours("green", "calm", default=True)(str.lower)  # the decorator form
    colours.register("blue", str.title, "cool")
    assert colours.default == "green" and colours.names() == ("red", "green", "blue") and len(colours) == 3
    assert colours.build("red", "x") == "X" and "blue" in colours and list(colours) == ["red", "green", "blue"]
    assert colours.help_text() == "red: loud; green (default): calm; blue: cool"


def test_taken_names_empty_help_and_unknown_names_are_errors():
    colours = Registry("colour")
    colours.register("red", str.upper, "loud")
    with pytest.raises(ValueError, match="'red' is already registered"):
        colours.register("red", str.lower, "quiet")
    colours.register("red", str.lower, "quiet", overwrite=True)
    assert colours.build("red", "X") == "x"
    with pytest.raises(ValueError, match="a one-line help text is required"):
        colours.register("grey", str, "  ")
    with pytest.raises(DataError, match="colour: unknown 'rouge'; expected one of red"):
        colours.get("rouge")
    with pytest.raises(DataError, match="unknown"):
        colours.get(["not", "hashable"])


def _package_registries():
    from pyroflows.diffusion import NETWORKS, SCHEDULES
    from pyroflows.diffusion.imputation import IMPUTATION_METHODS
    from pyroflows.diffusion.samplers import SAMPLERS
    from pyroflows.evaluation import METHODS
    from pyroflows.flows.families import BASES, FAMILIES

    return [FAMILIES, BASES, SCHEDULES, NETWORKS, SAMPLERS, IMPUTATION_METHODS, METHODS]


def test_every_package_registry_has_a_default_and_cli_safe_members():
    for registry in _package_registries():
        assert len(registry) >= 2 and registry.default in registry, registry
        for name in registry:
            assert re.fullmatch(r"[a-z][a-z0-9-]*", name), f"{registry.family} {name!r}: not a CLI-safe choice"
            assert registry.get(name).help and "\n" not in registry.get(name).help
