"""The catalog's one error type and the way its messages name bad rows."""

from __future__ import annotations

import numpy as np

from spxbatch.errors import CatalogError as CatalogError  # an error that crosses stages (the CLI: exit 2)

#: How many bad rows an error message names.
_SHOW = 3
ROWS_NOTE = "rows are 1-based data rows, header not counted"


def column_list(columns) -> str:
    """The first dozen column names, quoted, and how many more there are."""
    names = [repr(c) for c in list(columns)[:12]]
    return ", ".join(names) + (f" and {len(columns) - 12} more" if len(columns) > 12 else "")


def row_list(bad: np.ndarray, values: np.ndarray | None = None) -> str:
    """'row 5 (value 'x'), row 9 and 12 more rows' for the first few indices of a boolean mask."""
    idx = np.flatnonzero(bad)
    parts = []
    for i in idx[:_SHOW]:
        text = f"row {i + 1}"
        if values is not None:
            value = values[i].item() if isinstance(values[i], np.generic) else values[i]
            text += f" (value {value!r})"
        parts.append(text)
    more = len(idx) - _SHOW
    return ", ".join(parts) + (f" and {more} more row{'s' * (more > 1)}" if more > 0 else "")
