"""`spxbatch update CUBE`: measure only what the archive added since the cube was made (`update.update_cube`)."""

from spxbatch.pipeline.update.update import UpdateResult, update_cube

__all__ = ["UpdateResult", "update_cube"]
