"""study.toml: the presets validate, and every malformed file gives one error that names the
file, the line, the key and the valid choices."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpc.study.datasets import dataset_sizes
from hpc.study.presets import PRESETS_DIR
from hpc.study.spec import StudyError, load_study, parse_study

BASE = """\
[study]
architectures = 4
seeds = 2

[design]
max_depth = 2
max_width = 32
stem = "small"
resolution = 16
num_classes = 10

[recipe]
epochs = 1

[datasets.digits]
"""


def _error(text: str) -> str:
    with pytest.raises(StudyError) as raised:
        parse_study(text, root="/tmp/some-study", filename="study.toml")
    return str(raised.value)


def test_paper_preset_declares_500_architectures_on_imagenet_its_subsets_and_8_datasets(
    tmp_path: Path,
) -> None:
    study = load_study(PRESETS_DIR / "paper.toml")
    names = [d.name for d in study.datasets]
    assert study.settings.architectures == 500
    assert study.reference == "imagenet"
    assert study.design.flops == (340e6, 400e6)
    assert study.design.resolution == 224
    assert [n for n in names if n.startswith("imagenet_k")] == [
        "imagenet_k10",
        "imagenet_k25",
        "imagenet_k50",
        "imagenet_k100",
        "imagenet_k250",
        "imagenet_k500",
    ]
    assert len(names) == 19
    # Subsets read their parent's files: they inherit its path.
    assert study.dataset("imagenet_k10").spec.path == study.dataset("imagenet").spec.path
    assert study.dataset("imagenet_k10").spec.num_classes == 10
    # Size controls of the four smallest subsets: as many training images, all classes.
    controls = [study.dataset(n) for n in names if n.startswith("imagenet_n")]
    assert [c.spec.n for c in controls] == [
        dataset_sizes(study.dataset(f"imagenet_k{k}"))[0] for k in (10, 25, 50, 100)
    ]
    assert {(c.spec.parent, c.spec.num_classes, c.prepared_spec.name) for c in controls} == {
        ("imagenet", 1000, "imagenet")
    }


def test_demo_preset_has_9_datasets_with_binary_elpv_at_32_px() -> None:
    study = load_study(PRESETS_DIR / "demo.toml")
    assert [d.name for d in study.datasets] == [
        "fashion_mnist",
        "fashion_mnist_k2",
        "fashion_mnist_k5",
        "fashion_mnist_n400",
        "fashion_mnist_n1000",
        "mnist",
        "animal_mnist",
        "elpv",
        "digits",
    ]
    assert study.settings.architectures == 24
    assert study.settings.seeds == 2
    assert study.reference == "fashion_mnist"
    cap = study.dataset("fashion_mnist").spec.max_train
    assert cap is not None and cap <= 6000
    assert study.dataset("fashion_mnist_k5").spec.max_train == cap  # inherited from the parent
    elpv = study.dataset("elpv").spec
    assert (elpv.binary, elpv.resolution, elpv.num_classes) == (True, 32, 2)
    # Each control has its subset's training images (balanced classes: exactly), all classes.
    for k, n in ((2, 400), (5, 1000)):
        subset, control = study.dataset(f"fashion_mnist_k{k}"), study.dataset(f"fashion_mnist_n{n}")
        assert dataset_sizes(subset)[0] == dataset_sizes(control)[0] == n
        assert (control.spec.num_classes, control.spec.max_train) == (10, cap)


def test_unknown_key_names_it_with_file_line_and_valid_keys() -> None:
    message = _error(BASE.replace("seeds = 2", "seedz = 2"))
    assert message.startswith("study.toml:3: ")
    assert "unknown key 'seedz' in [study]" in message
    assert "valid keys: name, reference, architectures, seeds, max_attempts" in message


def test_wrong_type_names_key_line_and_expected_type() -> None:
    message = _error(BASE.replace("architectures = 4", 'architectures = "many"'))
    assert message == "study.toml:2: architectures must be an integer, got str 'many'"


def test_unknown_top_level_table_lists_the_sections() -> None:
    message = _error(BASE + "\n[trainer]\nepochs = 3\n")
    assert message.startswith("study.toml:17: unknown key 'trainer'")
    assert "valid keys: study, design, recipe, cluster, scores, datasets" in message


def test_unknown_dataset_lists_registered_datasets_and_how_to_declare_your_own() -> None:
    message = _error(BASE + "\n[datasets.imagenette]\n")
    assert message.startswith("study.toml:17: unknown dataset 'imagenette'")
    assert "fashion_mnist" in message and "source=" in message


def test_unknown_dataset_option_lists_valid_options() -> None:
    message = _error(BASE.replace("[datasets.digits]", "[datasets.digits]\nmax_trian = 100"))
    assert message.startswith("study.toml:16: unknown key 'max_trian' in [datasets.digits]")
    assert "max_train" in message and "recipe" in message


def test_unknown_recipe_key_of_a_dataset_points_at_its_line() -> None:
    text = BASE.replace("[datasets.digits]", "[datasets.digits]\nrecipe = { epochs = 2, lr = 0.1 }")
    message = _error(text)
    assert message.startswith("study.toml:16: ")
    assert "unknown key(s) ['lr']" in message and "base_lr" in message


def test_flops_range_outside_the_design_space_is_impossible() -> None:
    message = _error(BASE.replace("num_classes = 10", "num_classes = 10\nflops = [1e12, 2e12]"))
    assert message.startswith(
        "study.toml:11: flops = [1,000,000,000,000, 2,000,000,000,000] is impossible"
    )
    assert "spans about" in message


def test_reversed_range_is_impossible() -> None:
    message = _error(BASE.replace("num_classes = 10", "num_classes = 10\nparams = [5000, 100]"))
    assert message == "study.toml:11: params = [5000, 100] is impossible: need 0 <= lo <= hi"


def test_unknown_design_space_lists_the_spaces() -> None:
    message = _error(BASE.replace("[design]", '[design]\nspace = "resnet"'))
    assert message.startswith("study.toml:6: space 'resnet' is not a design space")
    assert "anynetx_a" in message and "regnety" in message


def test_design_override_the_space_does_not_have_is_an_error() -> None:
    message = _error(BASE.replace("max_depth = 2", "max_depht = 2"))
    assert message.startswith("study.toml:6: unknown key 'max_depht' in [design]")
    assert "max_depth" in message


def test_reference_must_be_a_declared_dataset() -> None:
    message = _error(BASE.replace("seeds = 2", 'seeds = 2\nreference = "mnist"'))
    assert message == "study.toml:4: reference 'mnist' is not a declared dataset; declared: digits"


def test_zero_seeds_is_an_error() -> None:
    assert (
        _error(BASE.replace("seeds = 2", "seeds = 0")) == "study.toml:3: seeds must be >= 1, got 0"
    )


def test_no_dataset_is_an_error() -> None:
    message = _error(BASE.replace("[datasets.digits]\n", ""))
    assert message.startswith("study.toml: no dataset declared")


def test_invalid_toml_says_where() -> None:
    message = _error(BASE.replace("seeds = 2", "seeds = = 2"))
    assert re.match(r"study\.toml: not valid TOML: .*line 3", message)


def test_cluster_values_are_checked() -> None:
    message = _error(BASE + "\n[cluster]\nmargin = 1.5\n")
    assert message == "study.toml:18: margin must be in (0, 1], got 1.5"


def test_cohort_keys_default_to_auto_and_the_tables_default_kind() -> None:
    cluster = parse_study(BASE, root="/tmp/x").cluster
    assert (cluster.cohort, cluster.cuda_graphs, cluster.gpu, cluster.throughput) == (
        "auto",
        "auto",
        "",
        0.0,
    )
    text = BASE + '\n[cluster]\ngpu = "h200"\ncohort = 4\ncuda_graphs = false\n'
    cluster = parse_study(text, root="/tmp/x").cluster
    assert (cluster.gpu, cluster.cohort, cluster.cuda_graphs) == ("h200", 4, False)
    paper = load_study(PRESETS_DIR / "paper.toml").cluster
    assert (paper.gpu, paper.cohort, paper.cuda_graphs) == ("h200", "auto", "auto")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('gpu = "a100"', "gpu 'a100' is not a device kind of the throughput table "
         "(hpc/study/throughput.toml); kinds: cpu-2, h200, v100"),
        ("gpu = 100", "gpu must be a string, got int 100"),
        ("cohort = 0", 'cohort must be "auto" or an integer >= 1, got 0'),
        ('cohort = "many"', "cohort must be \"auto\" or an integer >= 1, got 'many'"),
        ("cohort = 2.5", 'cohort must be "auto" or an integer >= 1, got 2.5'),
        ("cohort = true", 'cohort must be "auto" or an integer >= 1, got True'),
        ('cuda_graphs = "yes"', "cuda_graphs must be \"auto\", true or false, got 'yes'"),
        ("cuda_graphs = 1", 'cuda_graphs must be "auto", true or false, got 1'),
        ("throughput = -1.0", "throughput must be >= 0 (0: the throughput table), got -1.0"),
    ],
)  # fmt: skip
def test_cohort_keys_are_checked_with_the_valid_choices(line: str, message: str) -> None:
    assert _error(BASE + f"\n[cluster]\n{line}\n") == f"study.toml:18: {message}"


def test_a_dataset_may_name_its_own_gpu_kind_and_cohort() -> None:
    text = BASE + '\n[datasets.fashion_mnist]\ncluster = { gpu = "cpu-2", cohort = 2 }\n'
    fashion = parse_study(text, root="/tmp/x").dataset("fashion_mnist")
    assert (fashion.cluster.gpu, fashion.cluster.cohort) == ("cpu-2", 2)
    message = _error(BASE + '\n[datasets.fashion_mnist]\ncluster = { cohort = "x" }\n')
    assert message == "study.toml:18: cohort must be \"auto\" or an integer >= 1, got 'x'"


def test_dataset_recipe_and_cluster_override_the_study_defaults() -> None:
    text = (
        BASE
        + "\n[cluster]\ntime_min = 60\n"
        + (
            "\n[datasets.fashion_mnist]\nmax_train = 500\n"
            "recipe = { epochs = 3 }\ncluster = { time_min = 30, gpus = 2 }\n"
        )
    )
    study = parse_study(text, root="/tmp/x")
    digits, fashion = study.dataset("digits"), study.dataset("fashion_mnist")
    assert (digits.recipe.epochs, digits.cluster.time_min, digits.cluster.gpus) == (1, 60, 1)
    assert (fashion.recipe.epochs, fashion.cluster.time_min, fashion.cluster.gpus) == (3, 30, 2)


def test_subset_inherits_its_declared_parent_unless_it_says_otherwise() -> None:
    text = BASE + (
        "\n[datasets.fashion_mnist]\nmax_train = 500\nrecipe = { epochs = 3 }\n"
        "\n[datasets.fashion_mnist_k3]\nrecipe = { batch_size = 64 }\n"
    )
    subset = parse_study(text, root="/tmp/x").dataset("fashion_mnist_k3")
    assert (subset.spec.parent, subset.spec.k, subset.spec.max_train) == ("fashion_mnist", 3, 500)
    assert (subset.recipe.epochs, subset.recipe.batch_size) == (3, 64)


def test_subset_cannot_prepare_its_parents_files_otherwise() -> None:
    text = BASE + (
        "\n[datasets.fashion_mnist]\nmax_train = 500\n"
        "\n[datasets.fashion_mnist_k3]\nmax_train = 800\n"
    )
    message = _error(text)
    assert message.startswith(
        "study.toml:21: fashion_mnist_k3 reads the prepared files of fashion_mnist"
    )
    assert "takes its max_train from [datasets.fashion_mnist]" in message


def test_users_own_dataset_is_declared_by_source_and_path() -> None:
    text = BASE + '\n[datasets.cracks]\nsource = "folder"\npath = "/data/cracks"\nresolution = 64\n'
    spec = parse_study(text, root="/tmp/x").dataset("cracks").spec
    assert (spec.source, spec.path, spec.resolution) == ("folder", "/data/cracks", 64)


def test_missing_study_toml_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="anysweep init"):
        load_study(tmp_path)
