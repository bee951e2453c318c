"""argparse ``type=`` validators: a bad value ends in argparse's usage line and one error naming it (exit 2).

Only the standard library is imported: the CLI builds every parser at start-up.
"""
from __future__ import annotations

import argparse
import re


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def dataset_id_or_name(text: str) -> str:
    """What nnU-Net's ``-d`` takes: an id (``501``) or a dataset folder name (``Dataset501_KvasirSEG``)."""
    if re.fullmatch(r"\d+", text.strip()) or (text.startswith("Dataset") and len(text) > len("Dataset")):
        return text.strip()  # the same rule as nnU-Net's maybe_convert_to_dataset_name
    raise argparse.ArgumentTypeError(f"expected a dataset id (e.g. 501) or a dataset name "
                                     f"(e.g. Dataset501_KvasirSEG), got {text!r}")
