"""Physical units of pixel sizes, as microscopy files spell them."""

from __future__ import annotations

import math

# Factors to micrometres. Files spell units many ways: OME uses symbols ("µm", "nm"),
# OME-NGFF full names ("micrometer"), ImageJ "micron" or an escaped "\u00B5m".
_TO_UM: dict[str, float] = {
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "micrometers": 1.0, "micrometres": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "angstrom": 1e-4,
    "in": 25400.0, "inch": 25400.0,
}


def to_micrometres(value: object, unit: object) -> float | None:
    """Convert a length to micrometres; None when the value or unit is unusable.

    Parameters
    ----------
    value
        The length (a number or numeric string).
    unit
        The unit as the file spells it; None is taken as micrometres, the OME default.

    Returns
    -------
    float or None
        The length in µm, or None for unknown units ("pixel"), zero, negative or
        non-finite values, which files use to mean "not calibrated".
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if unit is None:
        factor = 1.0
    else:
        text = str(unit).strip().lower().replace("\\u00b5", "µ")
        factor = _TO_UM.get(text, math.nan)
    result = number * factor
    if not math.isfinite(result) or result <= 0:
        return None
    return result
