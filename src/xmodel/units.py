"""Numbers for people: counts with SI suffixes, bytes in binary units (what the CLI and the logs print)."""

from __future__ import annotations


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.23M'; with unit 'B', bytes in binary units."""
    if unit == "B":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(n) < 1024 or suffix == "TiB":
                return f"{n:.0f} {suffix}" if suffix == "B" else f"{n:.2f} {suffix}"
            n /= 1024
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"
