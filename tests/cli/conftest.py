"""The CLI tests run under torch's default float32, as the command line does; the property suite's counts (commands,
generated cases, failures) are printed after the run."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.float32(reason="the command line runs under torch's default dtype, float32"))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001 - pytest's hook
    import sys

    modules = [m for name, m in list(sys.modules.items()) if name.endswith("test_properties")]
    cases = getattr(modules[0], "CASES", None) if modules else None
    if not cases:
        return
    failed = [r for r in terminalreporter.stats.get("failed", []) if "test_properties" in r.nodeid]
    terminalreporter.write_line(
        f"CLI property suite: {len(cases)} commands, {sum(cases.values())} generated cases, {len(failed)} failing "
        f"test(s); per command: {dict(cases)}"
    )
