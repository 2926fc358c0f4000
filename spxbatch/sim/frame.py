"""An image being rendered: true rate, read-out, FLAGS, and the record of every pixel altered on purpose."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spxbatch.sim import scene


@dataclass
class Frame:
    """An image being built: true rate, read-out, flags, and the record of what was planted."""

    true: np.ndarray
    flags: np.ndarray
    obs: np.ndarray | None = None
    nan_var: np.ndarray | None = None
    unflagged: np.ndarray | None = None
    defects: list[dict] = field(default_factory=list)

    def mark(self, ys, xs, name: str) -> None:
        """Set FLAGS bit `name` on pixels (ys, xs) and record them as planted defects of that kind."""
        ys, xs = np.atleast_1d(ys), np.atleast_1d(xs)
        self.flags[ys, xs] |= scene.bit(name)
        self.defects += [{"x": int(a), "y": int(b), "kind": name} for a, b in zip(xs, ys, strict=True)]
