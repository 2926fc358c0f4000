"""Assembly: the image-major parts of a run shuffled into the source-major cube, block by block on the
workers (see `driver`)."""
