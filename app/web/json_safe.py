"""Plain JSON out of pandas and numpy values."""

from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """Plain JSON: numpy scalars become Python numbers, NaN/inf/NA become null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is not None and str(value) == "<NA>":
        return None
    return value
