"""One owner per concept, checked by reading the source: the status vocabulary, the finished
rule, the cell stem, the study folder's paths, the scheduler a record names, Slurm's
clients and options, /proc, the atomic writer, and short functions in hpc/. Each test names
the owner, so a duplicate that creeps back in fails here with its file and line."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("anynet", "loaders", "hpc", "analysis")
HPC = ROOT / "hpc"
LAYOUT = "hpc/study/layout.py"
SCHEDULERS = "hpc/scheduling/schedulers/"
RECORDS = "hpc/scheduling/records.py"
SLURM = "hpc/scheduling/schedulers/slurm.py"
LOCALSLURM = "hpc/localslurm/"
SLURM_CLIENTS = {"squeue", "sbatch", "scancel", "scontrol", "sacct", "sinfo", "srun", "salloc"}
# Names of the study folder's entries; a path joined from them lives in the layout alone.
FOLDER_NAMES = {
    "results",
    "checkpoints",
    "logs",
    "jobs",
    "data",
    "report",
    "queue",
    "claimed",
    "done",
    "prepare",
    "reset",
    "slurm",
    "local",
    "scores",
}
FILE_NAMES = {"study.toml", "architectures.json", "results.h5", "record.json", "results-index.npz"}
JOINED_NAMES = FOLDER_NAMES | FILE_NAMES | {"submit.sh"}
# The demo's closing table opens results.h5 and writes report/ as `anysweep analyze` does.
ANALYSIS_SIDE = {("hpc/cli/demo.py", "summarize")}


def _files(*packages: str) -> Iterator[tuple[str, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        first = node.body[0] if isinstance(node, kinds) and node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            found.add(id(first.value))
    return found


def _strings(tree: ast.Module) -> Iterator[ast.Constant]:
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node


def _in_function(tree: ast.Module) -> dict[int, str]:
    """id of every node -> the name of the top-level function it is in."""
    owner = {}
    for top in tree.body:
        if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(top):
                owner[id(node)] = top.name
    return owner


def _assigned(name: str) -> list[str]:
    """Where a module-level constant of that name is assigned, in every package."""
    return [
        path
        for path, tree in _files(*PACKAGES)
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id == name
    ]


def test_the_final_statuses_are_written_once_in_the_schema() -> None:
    found = [
        f"{path}:{node.lineno}"
        for path, tree in _files(*PACKAGES)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set))
        and {getattr(e, "value", None) for e in node.elts} == {"done", "diverged"}
    ]
    assert len(found) == 1 and found[0].startswith("analysis/schema.py:"), found


def test_the_finished_rule_is_decided_in_one_module() -> None:
    readers = sorted(
        path
        for path, tree in _files("hpc")
        if any(
            isinstance(node, (ast.Name, ast.Attribute, ast.alias))
            and "FINAL_STATUSES"
            in (getattr(node, "id", ""), getattr(node, "attr", ""), getattr(node, "name", ""))
            for node in ast.walk(tree)
        )
    )
    assert readers == ["hpc/study/results.py"]


def test_the_cell_stem_is_formatted_and_parsed_in_the_layout_only() -> None:
    formats, parses = [], []
    for path in sorted(HPC.rglob("*.py")):
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        formats += [where for _ in re.finditer(r"-s\{", text)]
        parses += [where for _ in re.finditer(r"""partition\(\s*["']-s["']\s*\)""", text)]
    assert formats == [LAYOUT] and parses == [LAYOUT], (formats, parses)


def test_no_module_but_the_layout_joins_study_folder_paths() -> None:
    joins = []
    for path, tree in _files("hpc"):
        if path == LAYOUT:
            continue
        owner = _in_function(tree)
        for node in ast.walk(tree):
            if (path, owner.get(id(node))) in ANALYSIS_SIDE:
                continue
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                right = node.right
                if isinstance(right, ast.Constant) and right.value in JOINED_NAMES:
                    joins.append(f"{path}:{node.lineno}: / {right.value!r}")
        for node in _strings(tree):
            if node.value in FILE_NAMES and (path, owner.get(id(node))) not in ANALYSIS_SIDE:
                joins.append(f"{path}:{node.lineno}: {node.value!r}")
    assert joins == []


def test_a_records_scheduler_is_read_by_the_schedulers_alone() -> None:
    reads = []
    for path, tree in _files("hpc"):
        if path.startswith(SCHEDULERS) or path == RECORDS:
            continue
        for node in ast.walk(tree):
            on_self = isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "self"
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("scheduler", "own")
                and not on_self
            ):
                reads.append(f"{path}:{node.lineno}: .{node.attr}")
        reads += [f"{path}:{n.lineno}: the 'cluster' key" for n in _cluster_keys(tree)]
    assert reads == []


def _cluster_keys(tree: ast.Module) -> Iterator[ast.AST]:
    """`x["cluster"]` and `x.get("cluster")`: a record's scheduler read from its dict."""
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            key = node.args[0] if node.func.attr == "get" and node.args else None
        if isinstance(key, ast.Constant) and key.value == "cluster":
            yield node


def test_slurm_clients_are_called_only_by_the_slurm_scheduler_and_localslurm() -> None:
    calls = []
    for path, tree in _files("hpc"):
        if path == SLURM or path.startswith(LOCALSLURM):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
                first = node.elts[0]
                if isinstance(first, ast.Constant) and first.value in SLURM_CLIENTS:
                    calls.append(f"{path}:{node.lineno}: {first.value}")
            value = node.value if isinstance(node, ast.keyword) and node.arg == "cluster" else None
            if isinstance(value, ast.Constant) and value.value == "slurm":
                calls.append(f"{path}:{value.lineno}: submitit's Slurm executor")
    assert calls == []


def test_slurm_options_and_the_signal_delay_are_written_once() -> None:
    options = [
        f"{path}:{node.lineno}: {node.value}"
        for path, tree in _files("hpc")
        for node in _strings(tree)
        if re.fullmatch(
            r"(slurm_)?(gpus_per_node|cpus_per_task|signal_delay_s|partition)", node.value
        )
    ]
    assert options and all(o.startswith(SLURM) for o in options), options
    assert _assigned("SIGNAL_DELAY_S") == [SLURM]
    for template in (ROOT / "sbatch_templates").iterdir():
        assert not re.search(r"USR2@\d|--time=\d|--mem=\d", template.read_text()), template


def test_proc_is_read_in_one_module() -> None:
    readers = sorted(
        {
            path
            for path, tree in _files("hpc")
            for n in _strings(tree)
            if n.value.startswith("/proc")
        }
    )
    assert readers == ["hpc/procfs.py"]


def test_one_atomic_writer_per_package_that_may_not_import_the_other() -> None:
    writers = sorted(
        {
            path
            for path, tree in _files(*PACKAGES)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ("fsync", "mkstemp")
        }
    )
    assert writers == ["analysis/files.py", "loaders/files.py"]


def test_subsets_are_derived_from_names_by_the_registry_alone() -> None:
    for path, tree in _files("hpc"):
        names = {getattr(n, "id", getattr(n, "name", "")) for n in ast.walk(tree)}
        assert "SUBSET_RE" not in names, path
        calls = [
            n.lineno
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr == "parent_spec"
        ]
        assert not calls or path == "hpc/study/spec.py", (path, calls)


def test_shared_vocabularies_are_defined_once() -> None:
    owners = {name: _assigned(name) for name in ("AUGMENTS", "DEVICES", "SUBSET_KEYS", "STATUSES")}
    assert owners == {
        "AUGMENTS": ["loaders/registry.py"],
        "DEVICES": ["hpc/study/spec.py"],
        "SUBSET_KEYS": ["loaders/registry.py"],
        "STATUSES": ["analysis/schema.py"],
    }


def test_each_class_and_function_name_means_one_thing() -> None:
    defined: dict[str, list[str]] = {}
    for path, tree in _files(*PACKAGES):
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
                defined.setdefault(node.name, []).append(path)
    for name in ("Study", "DatasetInfo", "Chunk", "Cell", "read_results", "cancel", "render"):
        assert len(defined.get(name, [])) <= 1, (name, defined[name])


def test_the_cell_record_format_is_written_in_the_schema_alone() -> None:
    packers = sorted(
        path
        for path, tree in _files("hpc", "analysis")
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and "struct" in [a.name for a in node.names] + [getattr(node, "module", None)]
    )
    assert packers == ["analysis/schema.py"]
    suffixes = [
        f"{path}:{node.lineno}"
        for path, tree in _files("hpc")
        for node in _strings(tree)
        if node.value.endswith(".pack") or node.value == ".h5"
    ]
    assert [s.partition(":")[0] for s in suffixes] == [LAYOUT, LAYOUT], suffixes


def test_one_rule_picks_the_record_that_counts() -> None:
    sorters = sorted(
        {
            path
            for path, tree in _files("hpc")
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "lexsort"
        }
    )
    assert sorters == ["hpc/study/results.py"]


def test_no_function_in_hpc_is_over_60_lines() -> None:
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _files("hpc")
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []
