"""The embedded simulated SPHEREx archive: real-format Level-2 files (QR2 and R7 layouts, alone or mixed as
IRSA serves them during reprocessing) with the injected truth beside them.

`make_archive` writes the files (generator; `release='qr2'|'qr3'|'mixed'`), `variants` strips or damages a
made archive, and the server modules serve it through IRSA's interfaces. README.md beside this file
describes the releases, the truth tables and the variants.
"""

from spxbatch.sim.make import COLLECTION_CARD, FIELDS, ArchiveInfo, field_sources, make_archive
from spxbatch.sim.sky import flux_ujy

__all__ = ["COLLECTION_CARD", "FIELDS", "ArchiveInfo", "field_sources", "flux_ujy", "make_archive"]
