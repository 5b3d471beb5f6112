"""Numbers as the report writes them: every statistic to 10 significant digits.

The statistics modules compute in full double precision, and every decision (verdicts,
adaptive stopping, Holm) is taken there, on those values. Their last digits are not
portable: least squares, MixedLM and the mean of a log go through OpenBLAS and numpy
kernels chosen per CPU (and per thread count), which round differently, so the same runs
give estimates that differ in the 15th-17th significant digit on another machine. The
report is built from :func:`rounded` values only (``build_report`` rounds the whole
:class:`~ablate.report.context.ReportContext` before any table, figure or line of
REPORT.md is written), so the files are the same bytes on every machine:

* every float is rounded to :data:`DIGITS` significant digits through its decimal text
  (Python's correctly rounded conversion, the same on every platform);
* in a column of a frame, or an array, a value below ``10**-DIGITS`` times the largest
  finite magnitude there is 0: it lies below the last digit kept of that column, where
  floating-point cancellation leaves noise whose size and sign depend on the kernel (the
  contrast of two variants with identical mode counts comes out as 7.1e-15 on one CPU
  and -1.8e-15 on another; both are 0). P-value columns (``p``, ``p_holm``, ``paired_p``,
  ``collapse_p``, ...: a ``p`` between underscores) keep their tiny values: they are
  computed to full relative precision however small, and are never cancellation noise.

Ten digits are far more than any table prints or a figure can show, and far above
the ~1e-15 relative scatter between kernels, so a value lands on a rounding boundary
(and is still written differently) with odds of about 1e-5 per number. A value computed
with cancellation (a contrast small beside the values it is taken from, a p-value far in a
tail) carries more scatter, so its odds are higher (docs/statistics.md gives the count
measured over the committed reports).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd

DIGITS = 10
ZERO = 10.0 ** -DIGITS  # relative to the largest magnitude of a column or array
P_VALUE = re.compile(r"(^|_)p(_|$)")  # column names of p-values: rounded, never set to 0


def significant(x: float, digits: int = DIGITS) -> float:
    """``x`` to ``digits`` significant digits (NaN and infinities as they are; never -0)."""
    x = float(x)
    if not math.isfinite(x):
        return x
    return float(f"{x:.{digits - 1}e}") + 0.0  # + 0.0 turns -0.0 into 0.0


def round_array(values, zero: bool = True) -> np.ndarray:
    """A float array to :data:`DIGITS` significant digits, with (``zero``) the noise below
    the last digit of its largest magnitude set to 0."""
    a = np.asarray(values, dtype=float)
    out = np.array([significant(v) for v in a.ravel().tolist()], dtype=float).reshape(a.shape)
    finite = np.abs(out[np.isfinite(out)])
    if zero and finite.size:
        out[np.abs(out) < ZERO * float(finite.max())] = 0.0
    return out


def round_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every float column through :func:`round_array` (p-value
    columns without the zero rule) and every float in an object column through
    :func:`significant`."""
    out = frame.copy()
    for i, name in enumerate(out.columns):
        s = out.iloc[:, i]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s):
            continue
        if pd.api.types.is_float_dtype(s):
            out.iloc[:, i] = round_array(s.to_numpy(dtype=float, na_value=np.nan),
                                         zero=not P_VALUE.search(str(name)))
        elif s.dtype == object:
            out.iloc[:, i] = [rounded(v) for v in s]
    return out


def rounded(obj):
    """``obj`` with every float in it rounded: frames column by column, arrays as a whole,
    and recursively the items of dicts, lists, tuples and the fields of dataclasses
    (a new instance; ints, bools, strings and everything else as they are)."""
    if isinstance(obj, pd.DataFrame):
        return round_frame(obj)
    if isinstance(obj, (bool, np.bool_, int, np.integer, str)) or obj is None:
        return obj
    if isinstance(obj, (float, np.floating)):
        return significant(obj)
    if isinstance(obj, np.ndarray):
        return round_array(obj) if obj.dtype.kind == "f" else obj
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(rounded(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: rounded(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj
