"""``--model PATH`` on the command line: the ``--trust-model-file`` flag.

The loader is the library's :func:`pyroflows.zoo.model_files.load_model_file` (re-exported here with
:func:`check_model_runs`).

Example:
    $ pyroflows attribute x.npy --model model.pt2 --layer features.3 --data train.npy --out maps
"""

from __future__ import annotations

import argparse

from pyroflows.zoo.model_files import check_model_runs, load_model_file

__all__ = ["add_model_file_arguments", "load_model_file", "TRUST_HELP", "check_model_runs"]

TRUST_HELP = (
    "allow --model PATH to be a whole-model pickle (torch.save(model, PATH)); unpickling runs code from the file, "
    "so only use files you trust. Without it, PATH must be a torch.export program (.pt2) or a TorchScript file, "
    "which load without running pickled code"
)


def add_model_file_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--trust-model-file`` to a command that takes ``--model PATH``."""
    parser.add_argument("--trust-model-file", action="store_true", help=TRUST_HELP)
