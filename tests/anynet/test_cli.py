"""`anysweep arch describe|sample` through add_arguments/run, as hpc's CLI calls them."""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from anynet import cli
from anynet.arch import Architecture
from anynet.complexity import complexity
from anynet.sampler import sample
from anynet.spaces import get_space

ROOT = Path(__file__).resolve().parents[2]
REGNETX_200MF = [
    "--depths",
    "1",
    "1",
    "4",
    "7",
    "--widths",
    "24",
    "56",
    "152",
    "368",
    "--bottleneck-ratios",
    "1",
    "1",
    "1",
    "1",
    "--group-widths",
    "8",
    "8",
    "8",
    "8",
]


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="anysweep arch")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(list(argv)))


def test_describe_prints_flops_params_and_acts(capsys):
    assert _run("describe", *REGNETX_200MF) == 0
    out = capsys.readouterr().out
    assert "architecture  d1.1.4.7-w24.56.152.368-b1-g8" in out
    assert "flops   199.04 MF  (199,040,872 multiply-adds)" in out
    assert "params  2.68 M  (2,684,792)" in out
    assert "acts    2.16 M  (2,164,056)" in out


def test_describe_json_reports_the_adjusted_architecture(capsys):
    argv = [*REGNETX_200MF, "--stem", "small", "--resolution", "32", "--classes", "10", "--json"]
    argv[argv.index("--group-widths") + 1] = "16"  # 24 channels in groups of 16: adjusted
    assert _run("describe", *argv) == 0
    out = json.loads(capsys.readouterr().out)
    arch = Architecture.from_dict(out["arch"])
    assert out["adjusted"] is True
    assert arch.widths == (32, 56, 152, 368) and arch.group_widths == (16, 8, 8, 8)
    assert out["requested"]["widths"] == [24, 56, 152, 368]
    cx = complexity(arch, 32, 10)
    assert (out["flops"], out["params"], out["acts"]) == (cx.flops, cx.params, cx.acts)


def test_describe_with_mismatched_stages_exits_2_with_the_reason(capsys):
    argv = [*REGNETX_200MF]
    del argv[argv.index("--depths") + 1]
    assert _run("describe", *argv) == 2
    assert "stage tuples must have equal lengths" in capsys.readouterr().err


def test_sample_writes_a_csv_row_per_architecture(tmp_path, capsys):
    out = tmp_path / "archs.csv"
    argv = ["sample", "-n", "7", "--seed", "3", "--flops", "340M:400M", "--out", str(out)]
    assert _run(*argv) == 0
    rows = list(csv.DictReader(out.open()))
    expected = sample("anynetx_a", 7, seed=3, flops=(340e6, 400e6))
    assert [r["id"] for r in rows] == [str(i) for i in range(7)]
    assert [r["name"] for r in rows] == [s.arch.name for s in expected]
    first = expected[0].arch
    assert [int(rows[0][f"width_{i}"]) for i in range(1, 5)] == list(first.widths)
    assert int(rows[0]["flops"]) == complexity(first).flops
    assert "wrote 7 architectures" in capsys.readouterr().err


def test_sample_json_loads_back_into_architectures(tmp_path):
    out = tmp_path / "archs.json"
    argv = [
        "sample",
        "--space",
        "anynetx_a",
        "-n",
        "5",
        "--resolution",
        "28",
        "--classes",
        "10",
        "--flops",
        "2M:6M",
        "--set",
        "max_depth=3",
        "--set",
        "max_width=128",
        "--set",
        "stem=small",
        "--set",
        "group_widths=8,16",
        "--out",
        str(out),
    ]
    assert _run(*argv) == 0
    archs = [Architecture.from_dict(d) for d in json.loads(out.read_text())]
    space = get_space("anynetx_a", max_depth=3, max_width=128, stem="small", group_widths=(8, 16))
    assert archs == [
        s.arch for s in sample(space, 5, resolution=28, num_classes=10, flops=(2e6, 6e6))
    ]


def test_sample_without_out_prints_csv(capsys):
    assert _run("sample", "-n", "2", "--params", "1M:3M") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("id,name,depth_1") and len(lines) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--set", "max_depth=0"], "need 1 <= min_depth <= max_depth"),
        (["sample", "--set", "nonsense=1"], "unknown option(s) ['nonsense']"),
        (["sample", "--out", "x.txt"], "--out must end in .csv or .json"),
        (["sample", "-n", "0"], "-n must be >= 1"),
        (
            [
                "sample",
                "--flops",
                "1G:2G",
                "-n",
                "1",
                "--set",
                "max_depth=1",
                "--set",
                "max_width=16",
                "--max-draws",
                "5000",
            ],
            "found 0 distinct architecture(s) of the 1 asked for in 5,000 draws",
        ),
        (["sample", "--max-draws", "0"], "--max-draws must be >= 1"),
    ],
)
def test_bad_sample_input_exits_2_with_a_message(argv, message, capsys):
    assert _run(*argv) == 2
    assert message in capsys.readouterr().err


def test_a_malformed_range_is_an_argparse_error_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        _run("sample", "--flops", "400M-340M")
    assert exit_.value.code == 2
    assert "expected LO:HI" in capsys.readouterr().err


def test_arch_commands_never_import_torch():
    code = (
        "import sys, anynet, anynet.cli; "
        "rc = anynet.cli.main(['describe', '--depths', '1', '--widths', '8', "
        "'--bottleneck-ratios', '1', '--group-widths', '8']); "
        "rc += anynet.cli.main(['sample', '-n', '2']); "
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "0 False"


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "anynet.cli", "describe", *REGNETX_200MF],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert "199.04 MF" in result.stdout
