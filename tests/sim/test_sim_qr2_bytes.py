"""QR2 archives keep their bytes: the same seed gives the same Level-2 files as before R7 support existed.

The digests (first 128 bits of each file's sha256) were recorded from the simulator at commit bd868d2,
before R7 support, with astropy 8.0.2 and numpy 2.4.6. If an upgrade of either changes how FITS bytes are
written, rerecord them from that commit's `make_archive` (as below) and say so in the commit; any other
difference is a regression.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from spxbatch.files import sha256_file
from spxbatch.sim import make_archive

#: Level-2 files of make_archive(npix=48, seed=5, n_visits=6) by name: the three QR2 versions (one with the
#: PSF-header erratum), a superseded file, a variant PSF cube, two missing bands, artifacts and noise.
DIGESTS = {
    "level2_2025W18_2A_0096_1D2_spx_l2b-v20-2025-253.fits": "db64367f11c2f3725de52c2a6ee3be5a",
    "level2_2025W18_2A_0060_1D3_spx_l2b-v20-2025-253.fits": "b1fad02ac87215a2bfd94de1b7a4fdcc",
    "level2_2025W18_2A_0096_1D5_spx_l2b-v20-2025-253.fits": "277d88282a8bcfca57034fcec3691be9",
    "level2_2025W18_2A_0096_2D5_spx_l2b-v20-2025-253.fits": "a605297e93229e70676be1b10153e389",
    "level2_2025W18_2A_0060_1D6_spx_l2b-v20-2025-253.fits": "ced370f810300b6ee41ec842bbf9e9f3",
    "level2_2025W18_2A_0060_2D6_spx_l2b-v20-2025-253.fits": "347a2adfe51302ca0d6bde0e9ecf26b6",
    "level2_2025W18_2A_0060_1D3_spx_l2b-v21-2025-354.fits": "e63ae2d4c3b58c05b146f7b621b0eb1a",
    "level2_2025W22_1B_0084_1D1_spx_l2b-v20-2025-262.fits": "05cbce5fbf061df25d8ac10406059d74",
    "level2_2025W22_1B_0084_2D1_spx_l2b-v20-2025-262.fits": "280c33ed9f19580f4efa586fff736114",
    "level2_2025W22_1B_0084_1D4_spx_l2b-v20-2025-262.fits": "f5c1a274fa3ea2559051f484a1a536cf",
    "level2_2025W22_1B_0084_2D4_spx_l2b-v20-2025-262.fits": "1cc7025e45a384c55ec1e6e650e6e748",
}


def test_qr2_level2_files_are_byte_identical(tmp_path):
    info = make_archive(tmp_path, npix=48, seed=5, n_visits=6)
    got = {PurePosixPath(rel).name: sha256_file(tmp_path / rel)[:32] for rel in info.files}
    assert got == DIGESTS
