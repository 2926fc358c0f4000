"""The Python API the README documents stays callable whatever modules have been imported before."""

from __future__ import annotations

import importlib
import pkgutil

import spxbatch


def test_public_names_survive_importing_every_module():
    for info in pkgutil.walk_packages(spxbatch.__path__, "spxbatch."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    assert callable(spxbatch.run) and spxbatch.run.__module__.startswith("spxbatch.")
    for name in ("Pipeline", "RunConfig", "open_cube", "plot_source", "read_catalog"):
        assert callable(getattr(spxbatch, name)), name
