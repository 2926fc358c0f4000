"""`python -m spxbatch.cli`: the same as the `spxbatch` command."""

import sys

from spxbatch.cli.main import main

sys.exit(main())
