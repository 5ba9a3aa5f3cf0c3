"""`python -m hpc.worker MANIFEST` or `python -m hpc.worker --array DIR --task-id N`."""

from hpc.worker import preempt

preempt.catch_from_start()  # before torch is imported: see hpc.worker.preempt

import sys  # noqa: E402

from hpc.worker.chunk import main  # noqa: E402

sys.exit(main())
