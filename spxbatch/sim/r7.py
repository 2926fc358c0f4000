"""What the simulator writes differently in R7 (pipeline 7.x) files, in one place (see R7-contract.md).

Flag bits and their `MSKNxxxx` cards, the ePSF zone grid and sampling, the WCS-WAVE grid, the IMAGE
cards R7 adds, and how a pipeline VERSION tells the layout. Every simulated R7 choice that the contract
marks DECISION lives here, so it changes in one place.
"""

from __future__ import annotations

from spxbatch.level2.constants import FLAG_BITS, R7_FLAG_BITS

#: The bits QR2 files do not have.
R7_ONLY_BITS: dict[str, int] = {k: v for k, v in R7_FLAG_BITS.items() if k not in FLAG_BITS}
#: Their OR.
R7_ONLY_MASK = sum(1 << b for b in R7_ONLY_BITS.values())

#: ePSF sampling: oversampling factor and array size (33 x 33 at x5 covers +-3.2 native pixels).
EPSF_OVERSAMPLE = 5
EPSF_SIZE = 33
#: DECISION (simulated): every ePSF array sums to OVERSAMPLE^2, so its pixel-centre evaluation sums to ~1.
EPSF_SUM = float(EPSF_OVERSAMPLE**2)
#: WCS-WAVE control points per axis in R7 files.
WAVE_CONTROL = 9
#: DECISION (simulated): the pipeline VERSION of R7 files (QR3 and the later reprocessings).
VERSION = "7.0.5"


def epsf_zones(detector: int) -> tuple[int, int]:
    """ePSF zones (x, y) of a detector: 21 x 21, except 11 x 41 on D3."""
    return (11, 41) if detector == 3 else (21, 21)


def is_r7(version: str) -> bool:
    """Whether a pipeline VERSION ('6.5.4+psffix1', '7.0.5', '7.0.0b6.post2+g6b3a1a7') is R7 (major >= 7)."""
    return int(version.split(".")[0]) >= 7


def mskn_cards() -> list[tuple[str, object, str]]:
    """The FLAGS header's bit names, `MSKNxxxx = 'NAME'` (xxxx the bit number), in bit order."""
    return [(f"MSKN{bit:04d}", name, f"name of FLAGS bit {bit}") for name, bit in
            sorted(R7_FLAG_BITS.items(), key=lambda kv: kv[1])]


def image_cards(npix: int) -> list[tuple[str, object, str]]:
    """IMAGE header cards that R7 adds to QR2's (BUNIT is set by the writer)."""
    return [
        ("DETCOORD", "sky", "MWIR pixels flipped on X to match SWIR view"),
        ("L1DQAFLG", "Pass", "Level-1 data quality assessment"),
        ("L2DQAFLG", "Pass", "Level-2 data quality assessment"),
        ("NON_SURVEY", False, "Taken outside the survey"),
        ("JACTIVE", npix, "Active pixels along j"),
        ("KACTIVE", npix, "Active pixels along k"),
    ]
