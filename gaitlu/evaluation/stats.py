"""Small numeric helpers shared by the protocol reports."""

from __future__ import annotations

import warnings

import numpy as np


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """np.nanmean without the all-NaN warning: an empty selection is simply NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=axis)


def json_number(value: float) -> float | None:
    """A figure for JSON output: NaN (no data) becomes null, the rest is rounded to 4 decimals."""
    return None if np.isnan(value) else round(float(value), 4)
