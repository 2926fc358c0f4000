"""FLAGS bit names: read from a file's header cards, combined into masks."""

from __future__ import annotations

import re

from spxbatch.level2.constants import FLAG_BITS, R7_FLAG_BITS
from spxbatch.level2.layout import QR2, R7

#: R7's `MSKNxxxx = 'NAME'`: the card names bit xxxx.
_MSKN = re.compile(rf"^{R7.flag_card_prefix}(\d{{4}})$")
#: Every flag name the code knows (QR2's and R7's): what options naming flags are checked against. A file's
#: own cards stay authoritative for its bits (a known name absent from a file's cards masks nothing there).
KNOWN_FLAG_NAMES: frozenset[str] = frozenset(FLAG_BITS) | frozenset(R7_FLAG_BITS)


def flag_mask(names: tuple[str, ...] | list[str], bits: dict[str, int]) -> int:
    """OR of the bits of `names`, resolved through `bits` (from the file's MP_* or MSKN cards)."""
    unknown = [n for n in names if n not in bits]
    if unknown:
        raise KeyError(f"flag names not in this file's flag cards: {', '.join(unknown)}")
    mask = 0
    for name in names:
        mask |= 1 << bits[name]
    return mask


def flag_bits_from_header(header) -> dict[str, int]:
    """Flag name -> bit from a FLAGS header: QR2's `MP_<NAME> = bit` cards (HIERARCH or plain) and R7's
    `MSKNxxxx = 'NAME'` cards, whichever the file has (both, if a file has both)."""
    out: dict[str, int] = {}
    for key in header:
        k = key.upper()
        if k.startswith("HIERARCH "):
            k = k[len("HIERARCH "):]
        if k.startswith(QR2.flag_card_prefix):
            out[k[len(QR2.flag_card_prefix):]] = int(header[key])
        elif m := _MSKN.match(k):
            out[str(header[key]).strip().upper()] = int(m.group(1))
    return out
