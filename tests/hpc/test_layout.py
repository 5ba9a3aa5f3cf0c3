"""The study folder's layout: where a cell's files are, the cell stem, the data folder."""

from __future__ import annotations

from pathlib import Path

from hpc.study.layout import StudyLayout, cell_paths, cell_stem, parse_stem


def test_cell_path_follows_the_study_layout(tmp_path: Path) -> None:
    assert (
        cell_paths(tmp_path, "mnist", 7, 1).legacy_result
        == tmp_path / "results" / "mnist" / "7-s1.h5"
    )


def test_a_cell_has_its_result_checkpoint_and_log_under_one_stem(tmp_path: Path) -> None:
    paths = cell_paths(tmp_path, "mnist_k2", 12, 0)
    assert paths.checkpoint == tmp_path / "checkpoints" / "mnist_k2" / "12-s0.pt"
    assert paths.log == tmp_path / "logs" / "mnist_k2" / "12-s0.log"
    assert cell_stem(12, 0) == "12-s0"
    assert parse_stem("12-s0") == (12, 0)
    assert [parse_stem(s) for s in ("12", "12-s", "a-s0", "12-s0.h5")] == [None] * 4


def test_data_dir_is_inside_the_study_unless_absolute(tmp_path: Path) -> None:
    assert StudyLayout.at(tmp_path).data_dir == tmp_path / "data"
    assert StudyLayout.at(tmp_path, "prepared").data_dir == tmp_path / "prepared"
    assert StudyLayout.at(tmp_path, "/shared/betons").data_dir == Path("/shared/betons")
