"""Memory quantities: read ``"8Gi"``, ``"4g"`` or bytes, and write bytes back as a Kubernetes quantity.

Kubernetes suffixes (``Ki Mi Gi Ti Pi Ei`` binary, ``K M G T P E`` decimal) and Docker's
lowercase suffixes (``b k m g t``, binary: ``"4g"`` is 4 GiB, as ``docker run --memory 4g``
reads it) are accepted. A plain number is bytes.
"""

from __future__ import annotations

import math
import re

__all__ = ["MAX_MEMORY_BYTES", "format_k8s_quantity", "parse_memory"]

#: The largest quantity accepted: 2**63 - 1 bytes (just under 8Ei), the most Docker's int64
#: ``Memory`` and a Kubernetes quantity hold.
MAX_MEMORY_BYTES = 2**63 - 1

_MEMORY_UNITS: dict[str, int] = {
    "": 1,
    # Kubernetes binary suffixes
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
    # Kubernetes decimal suffixes (Kubernetes reads a lowercase k as 1000 too; here k is Docker's)
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "E": 1000**6,
    # Docker's suffixes (binary, as `docker run --memory 4g` reads them)
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]{0,2})\s*$")


def parse_memory(value: str | int | float, *, field: str = "memory") -> int:
    """
    Return a memory quantity in bytes.

    :param value: ``"512Mi"``, ``"8Gi"``, ``"4g"``, ``"1.5G"`` or a number of bytes.
    :param field: The field name used in the error message.
    :raises ValueError: naming ``field`` and the value when it cannot be read, is not > 0 or is
        over :data:`MAX_MEMORY_BYTES`.
    """
    expected = f"{field} must be a positive quantity such as '512Mi', '8Gi', '4g' or a number of bytes"
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
            raise ValueError(f"{expected}, got {value!r}")
        amount = int(value)
    elif isinstance(value, str):
        match = _MEMORY_RE.match(value)
        if not match or match.group(2) not in _MEMORY_UNITS:
            raise ValueError(f"{expected}, got {value!r}")
        number, unit = match.groups()
        whole = number.partition(".")[0].lstrip("0")
        if len(whole) > len(str(MAX_MEMORY_BYTES)):  # too large; float() would overflow on it
            raise ValueError(f"{expected}, at most {MAX_MEMORY_BYTES} bytes (8Ei), got {value!r}")
        scale = _MEMORY_UNITS[unit]
        amount = int(number) * scale if "." not in number else int(float(number) * scale)
    else:
        raise ValueError(f"{expected}, got {value!r}")
    if amount < 1:
        raise ValueError(f"{expected}, got {value!r}")
    if amount > MAX_MEMORY_BYTES:
        raise ValueError(f"{expected}, at most {MAX_MEMORY_BYTES} bytes (8Ei), got {value!r}")
    return amount


def format_k8s_quantity(num_bytes: int) -> str:
    """Return ``num_bytes`` as the shortest exact Kubernetes binary quantity (``"8Gi"``)."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _MEMORY_UNITS[suffix]
        if num_bytes % unit == 0:
            return f"{num_bytes // unit}{suffix}"
    return str(num_bytes)
