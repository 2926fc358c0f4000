"""The embedded simulated SPHEREx archive: real-format QR2 Level-2 files with the injected truth beside them.

`make_archive` writes the files (generator); the server modules serve them through IRSA's interfaces.
"""

from spxbatch.sim.make import COLLECTION_CARD, FIELDS, ArchiveInfo, field_sources, make_archive
from spxbatch.sim.sky import flux_ujy

__all__ = ["COLLECTION_CARD", "FIELDS", "ArchiveInfo", "field_sources", "flux_ujy", "make_archive"]
