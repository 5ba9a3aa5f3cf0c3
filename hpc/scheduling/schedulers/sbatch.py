"""`anysweep sbatch`: the launch plan as ready sbatch array scripts, for those who submit by
hand. The scripts run the same worker on the same manifests as `anysweep launch`."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from hpc.scheduling.launch import (
    array_layout,
    next_record_id,
    record_arrays,
    write_manifests,
    write_record,
)
from hpc.scheduling.plan import Array, Plan, make_plan, max_array_size
from hpc.scheduling.status import active_cells, job_name
from hpc.study.population import sample_architectures, study_lock, unprepared
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


def render_array(study: Study, array: Array, name: str, manifests: Path, log_dir: Path) -> str:
    """One array's script from sbatch_templates/array.sbatch."""
    cluster = array.cluster
    options = [
        f"#SBATCH --{key}={getattr(cluster, key)}"
        for key in ("partition", "account", "qos", "constraint")
        if getattr(cluster, key)
    ]
    if cluster.gpus:
        options.append(f"#SBATCH --gpus-per-node={cluster.gpus}")
    return _template("array.sbatch").substitute(
        count=len(array.chunks),
        dataset=array.dataset,
        study=study.name,
        script=f"{array.label}.sbatch",
        manifests=shlex.quote(str(manifests)),
        job_name=name,
        last=len(array.chunks) - 1,
        parallelism=cluster.array_parallelism,
        time_min=cluster.time_min,
        cpus=cluster.cpus,
        mem_gb=cluster.mem_gb,
        log_dir=log_dir,
        options="\n".join(options),
        setup="\n".join(cluster.setup),
        python=shlex.quote(sys.executable),
    )


def render(study: Study, *, array_size: int | None = None) -> Rendered:
    """Write manifests and one script per array of the current plan into jobs/S<n>/.

    Cells queued or running (launched, or rendered and submitted) are left out, as `launch`
    would; rendering twice without submitting renders the same cells twice.
    """
    population = sample_architectures(study)
    with study_lock(study, "launch"):
        plan = make_plan(
            study,
            population,
            active=active_cells(study),
            array_size=max_array_size(study) if array_size is None else array_size,
        )
        if not plan.chunks:
            return Rendered(plan, "", (), None)
        missing = unprepared(study, sorted({a.dataset for a in plan.arrays}))
        if missing:
            raise FileNotFoundError(
                f"datasets not prepared yet: {', '.join(missing)}; run `anysweep prepare "
                f"{study.root}` before the arrays run"
            )
        record_id = next_record_id(study, "S")
        folder = study.root / "jobs" / record_id
        write_manifests(study, plan.arrays, population, array_layout(folder))
        log_dir = study.root / "logs" / "slurm"
        log_dir.mkdir(parents=True, exist_ok=True)
        scripts = []
        for array in plan.arrays:
            script = folder / f"{array.label}.sbatch"
            name = job_name(study, record_id, array.label)
            script.write_text(render_array(study, array, name, folder / array.label, log_dir))
            script.chmod(0o755)
            scripts.append(script)
        submit = folder / "submit.sh"
        submit.write_text(
            _template("submit.sh").substitute(
                count=len(scripts),
                study=study.name,
                root=shlex.quote(str(study.root)),
                submit_lines="\n".join(f"sbatch {shlex.quote(s.name)}" for s in scripts),
            )
        )
        submit.chmod(0o755)
        write_record(study, record_id, "sbatch", record_arrays(study, record_id, plan.arrays))
    return Rendered(plan, record_id, tuple(scripts), submit)
