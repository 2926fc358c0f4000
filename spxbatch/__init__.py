"""spxbatch: forced photometry of every SPHEREx observation of every source in a catalog.

`spxbatch.run(catalog, ...)` measures and returns the cube (on a Dask cluster, or in this process with
`executor=spxbatch.SerialExecutor()`); `spxbatch.open_cube(path)` opens one (and registers the `ds.spx`
accessor); `spxbatch.plot_source(ds, name)` draws one source.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"run": "pipeline.stages", "Pipeline": "pipeline.stages", "open_cube": "cube.store",
         "RunConfig": "pipeline.config", "SerialExecutor": "pipeline.executor", "plot_source": "figures.plots",
         "read_catalog": "plan.catalog"}


def __getattr__(name: str) -> Any:
    """Import the public API on first use, so that `spxbatch --help` starts quickly."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'spxbatch' has no attribute {name!r}")


__all__ = ["Pipeline", "RunConfig", "SerialExecutor", "__version__", "open_cube", "plot_source", "read_catalog",
           "run"]
