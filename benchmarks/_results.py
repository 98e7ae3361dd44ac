"""The one writer of ``benchmarks/RESULTS.md`` sections, shared by every benchmark script.

Example:
    >>> write_section("## My benchmark\\n\\nfigures\\n", "## My benchmark")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(section: str, heading: str) -> None:
    """Replace the section that starts with the line ``heading`` (up to the next ``## `` line) by ``section``, or
    append ``section`` when RESULTS.md has no such heading; every other section is kept as it is."""
    section = section.rstrip("\n") + "\n\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n")
