"""FLAGS bit names: read from a file's header cards, combined into masks."""

from __future__ import annotations

from spxbatch.level2.layout import QR2


def flag_mask(names: tuple[str, ...] | list[str], bits: dict[str, int]) -> int:
    """OR of the bits of `names`, resolved through `bits` (from the file's MP_* cards)."""
    unknown = [n for n in names if n not in bits]
    if unknown:
        raise KeyError(f"flag names not in this file's MP_* cards: {', '.join(unknown)}")
    mask = 0
    for name in names:
        mask |= 1 << bits[name]
    return mask


def flag_bits_from_header(header) -> dict[str, int]:
    """Flag name -> bit from a FLAGS header's `MP_<NAME>` cards (HIERARCH or plain)."""
    prefix = QR2.flag_card_prefix
    out: dict[str, int] = {}
    for key in header:
        k = key.upper()
        if k.startswith("HIERARCH "):
            k = k[len("HIERARCH "):]
        if k.startswith(prefix):
            out[k[len(prefix):]] = int(header[key])
    return out

