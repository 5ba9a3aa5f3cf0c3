"""`python -m hpc.worker MANIFEST` or `python -m hpc.worker --array DIR --task-id N`."""

import sys

from hpc.worker.chunk import main

sys.exit(main())
