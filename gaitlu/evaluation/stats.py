"""Small numeric helpers shared by the protocol reports."""

from __future__ import annotations

import warnings
from typing import overload

import numpy as np


@overload
def nanmean(values: np.ndarray, axis: None = None) -> float: ...


@overload
def nanmean(values: np.ndarray, axis: int) -> np.ndarray: ...


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """np.nanmean without the all-NaN warning: an empty selection is simply NaN. The mean of everything
    is a float, means along an axis an array."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values, axis=axis)
    return float(mean) if axis is None else np.asarray(mean)


def json_number(value: float) -> float | None:
    """A figure for JSON output: NaN (no data) becomes null, the rest is rounded to 4 decimals."""
    return None if np.isnan(value) else round(float(value), 4)
