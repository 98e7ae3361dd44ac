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


def read_section(heading: str) -> str | None:
    """The text of the section that starts with the line ``heading`` (up to the next ``## `` line), or ``None``."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    match = re.search(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", text, re.S | re.M)
    return match.group(0) if match else None


def write_subsections(heading: str, intro: str, body: str, order: tuple[str, ...] = ()) -> None:
    """Write the section ``heading`` as ``intro`` followed by its ``### `` subsections, where those in ``body``
    replace the ones of the same first word already in RESULTS.md and the others are kept (so a script run with
    one ``--part`` updates only that part). Subsections are ordered by ``order`` (their first words), then as found.
    """
    pattern = r"### ([\w-]+).*?(?=\n### |\Z)"
    old = read_section(heading) or ""
    blocks = {m.group(1): m.group(0).rstrip() for m in re.finditer(pattern, old, re.S)}
    for m in re.finditer(pattern, body, re.S):
        blocks[m.group(1)] = m.group(0).rstrip()
    keys = [k for k in order if k in blocks] + [k for k in blocks if k not in order]
    write_section(intro + "\n\n".join(blocks[k] for k in keys) + "\n", heading)
