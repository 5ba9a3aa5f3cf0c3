"""The sbatch scheduler: the launch plan as ready array scripts (sbatch_templates/) for those
who submit by hand. The scripts run the same worker on the same manifests as a Slurm launch;
once submitted they are Slurm jobs, so Slurm tells their states and cancels them, known by
their job names."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from hpc.scheduling.plan import Array, Plan
from hpc.scheduling.records import ArrayRecord, LaunchRecord, write_record
from hpc.scheduling.schedulers import Scheduler, Submission, Submitted, Tasks
from hpc.scheduling.schedulers.slurm import SIGNAL_DELAY_S, SlurmScheduler, sbatch_options
from hpc.study.spec import Study

# In a checkout (and an editable install) the templates sit beside the packages; a regular
# install puts them under <prefix>/share/anysweep (pyproject's data-files).
_CHECKOUT = Path(__file__).resolve().parents[3] / "sbatch_templates"
TEMPLATES = (
    _CHECKOUT
    if _CHECKOUT.is_dir()
    else Path(sys.prefix) / "share" / "anysweep" / "sbatch_templates"
)


@dataclass(frozen=True)
class Rendered:
    plan: Plan
    record: str  # jobs/<record>/ holds the scripts, their manifests and submit.sh
    scripts: tuple[Path, ...]
    submit: Path | None


def _template(name: str) -> Template:
    path = TEMPLATES / name
    if not path.is_file():
        raise FileNotFoundError(f"sbatch template {path} is missing from this installation")
    return Template(path.read_text())


def render_array(study: Study, array: Array, name: str, script: Path, manifests: Path) -> str:
    """One array's script from sbatch_templates/array.sbatch (`manifests`: the array's
    manifest)."""
    cluster = array.cluster
    options = sbatch_options(cluster)
    return _template("array.sbatch").substitute(
        count=len(array.chunks),
        dataset=array.dataset,
        study=study.name,
        script=script.name,
        manifests=shlex.quote(str(manifests)),
        job_name=name,
        last=len(array.chunks) - 1,
        parallelism=cluster.array_parallelism,
        log_dir=study.layout.sbatch_logs(),
        signal_delay=SIGNAL_DELAY_S,
        options="\n".join(f"#SBATCH --{k.replace('_', '-')}={v}" for k, v in options.items()),
        setup="\n".join(cluster.setup),
        python=shlex.quote(sys.executable),
    )


class SbatchScheduler(SlurmScheduler):
    """Renders instead of submitting; states, cancel and the Slurm options are Slurm's."""

    name = "sbatch"
    record_kind = "S"
    summary = "rendered {n} array scripts ({ids})"

    def submit(self, submission: Submission) -> Submitted:
        study, record_id = submission.study, submission.record_id
        layout = study.layout
        manifests = submission.write_array_manifests()
        layout.sbatch_logs().mkdir(parents=True, exist_ok=True)
        arrays = submission.arrays()
        scripts = []
        for array, record, manifest in zip(submission.plan.arrays, arrays, manifests, strict=True):
            script = layout.sbatch_script(record_id, array.label)
            script.write_text(render_array(study, array, record.job_name, script, manifest))
            script.chmod(0o755)
            scripts.append(script)
        submit = layout.submit_script(record_id)
        submit.write_text(
            _template("submit.sh").substitute(
                count=len(scripts),
                study=study.name,
                root=shlex.quote(str(study.root)),
                submit_lines="\n".join(f"sbatch {shlex.quote(s.name)}" for s in scripts),
            )
        )
        submit.chmod(0o755)
        write_record(study, record_id, self.name, arrays)
        return Submitted(files=(*scripts, submit))

    def submit_tasks(self, tasks: Tasks) -> Submitted:
        """No scripts for the scores: `anysweep score --cluster slurm` submits them."""
        return Scheduler.submit_tasks(self, tasks)

    def task_log(
        self, study: Study, record: LaunchRecord, array: ArrayRecord, index: int
    ) -> Path | None:
        # Slurm names the log by job id, unknown here; the script's first line names the
        # array's manifest.
        marker = str(study.layout.array_manifest(record.id, array.label))
        logs = sorted(
            study.layout.sbatch_logs().glob(f"*_{index}.out"),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for path in logs:
            with open(path, errors="replace") as handle:
                if marker in handle.readline():
                    return path
        return None


def render_scripts(study: Study) -> Rendered:
    """Write manifests and one script per array of the current plan into jobs/S<n>/.

    Cells queued or running (launched, or rendered and submitted) are left out, as `launch`
    would; rendering twice without submitting renders the same cells twice.
    """
    from hpc.scheduling.launch import launch

    launched = launch(study, cluster=SCHEDULER.name)
    if not launched.files:
        return Rendered(launched.plan, launched.record, (), None)
    return Rendered(launched.plan, launched.record, launched.files[:-1], launched.files[-1])


SCHEDULER = SbatchScheduler()
