"""`python -m hpc.cli VERB ...`: the `anysweep` command."""

import sys

from hpc.cli import main

sys.exit(main())
