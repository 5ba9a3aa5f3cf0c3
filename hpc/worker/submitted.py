"""`python -m hpc.worker.submitted FOLDER`: what a launched Slurm task runs. It is submitit's
job runner (`python -m submitit.core._submit FOLDER`) with SIGUSR2 caught from its first line:
the runner installs its own handler only after unpickling the chunk, which imports torch.
`hpc.worker.Chunk` then stops at the next step and requeues the task (see `Chunk.__call__`).
"""

from hpc.worker import preempt

preempt.catch_from_start()

from submitit.core.submission import submitit_main  # noqa: E402  (after the handler)

if __name__ == "__main__":
    submitit_main()
