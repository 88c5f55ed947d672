"""The tolerance table the tests use: one table, shipped in the package as
``gradfuse._tolerances`` so that ``gradfuse check`` judges a user's machine by the same numbers.

Add rows in ``python/gradfuse/_tolerances.py`` (with a comment why); this module re-exports
every public name so that ``from tolerances import STEP, assert_close`` keeps working.
"""

from __future__ import annotations

from gradfuse._tolerances import (
    AUTOCAST_BF16_CURVE,
    CAPTURABLE_VS_HOST,
    CLIPPED_FLOAT64,
    CPU_VS_CUDA,
    FASTMATH_ULPS,
    FLOAT32_STATE_OF_BFLOAT16,
    GRADCHECK,
    GRADCHECK_EPS,
    LIBM_FLOAT64,
    LOSS,
    LOW_PRECISION_DTYPES,
    LOW_PRECISION_FACTOR,
    LOW_PRECISION_ULPS,
    MEAN_ERROR_FACTOR,
    MUON_BF16_NS,
    NORM,
    STEP,
    TRAINING_CURVE,
    TRAJECTORY,
    Tol,
    assert_close,
    assert_low_precision,
    assert_mean_error,
    low_precision_bound,
    max_errors,
    within,
)

__all__ = [
    "AUTOCAST_BF16_CURVE",
    "CAPTURABLE_VS_HOST",
    "CLIPPED_FLOAT64",
    "CPU_VS_CUDA",
    "FASTMATH_ULPS",
    "FLOAT32_STATE_OF_BFLOAT16",
    "GRADCHECK",
    "GRADCHECK_EPS",
    "LIBM_FLOAT64",
    "LOSS",
    "LOW_PRECISION_DTYPES",
    "LOW_PRECISION_FACTOR",
    "LOW_PRECISION_ULPS",
    "MEAN_ERROR_FACTOR",
    "MUON_BF16_NS",
    "NORM",
    "STEP",
    "TRAINING_CURVE",
    "TRAJECTORY",
    "Tol",
    "assert_close",
    "assert_low_precision",
    "assert_mean_error",
    "low_precision_bound",
    "max_errors",
    "within",
]
