"""The ffcv backend: .beton files written from real images read back exactly, subsets by
index selection, seeded epochs on one reused Loader, and failures that raise, never hang.
ffcv Loaders compile for seconds each, so the few used here are shared by module fixtures."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from loaders.beton import check_beton
from loaders.files import read_json, sidecar
from loaders.images import fit_max_side, square
from loaders.pipelines import build_loaders
from loaders.prepare import open_prepared, prepare
from loaders.registry import DatasetError, get_dataset
from loaders.sources import load_source

CAPS = dict(max_train=600, max_test=300, backend="ffcv")


def unnormalize(images: torch.Tensor, prepared) -> torch.Tensor:
    mean = torch.tensor(prepared.mean).view(1, 3, 1, 1)
    std = torch.tensor(prepared.std).view(1, 3, 1, 1)
    return torch.round(images * std + mean).to(torch.uint8)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    spec = get_dataset("fashion_mnist", **CAPS)
    return prepare(spec, tmp_path_factory.mktemp("ffcv"), progress=False, num_workers=2)


@pytest.fixture(scope="module")
def fashion_source():
    from loaders.prepare import _capped

    spec = get_dataset("fashion_mnist", **CAPS)
    return _capped(spec, load_source(spec))


@pytest.fixture(scope="module")
def fashion_test_batches(fashion):
    _, test = build_loaders(fashion, batch_size=128, num_workers=2)
    return test, [(x.clone(), y.clone()) for x, y in test]


@pytest.fixture(scope="module")
def subset(fashion):
    prepared = prepare(get_dataset("fashion_mnist_k3", **CAPS), fashion.data_dir, progress=False)
    # Loaders compile at first use, so building a pair and using one of them costs one.
    train, _ = build_loaders(prepared, batch_size=50, num_workers=2, augment="rrc")
    _, test = build_loaders(prepared, batch_size=50, num_workers=2, augment="pad_crop")
    return prepared, train, test


def test_a_raw_beton_reads_back_the_source_pixels_and_labels_exactly(
    fashion_test_batches, fashion, fashion_source
):
    test, batches = fashion_test_batches
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert (len(test), images.shape, images.dtype) == (3, (300, 3, 28, 28), torch.float32)
    source = torch.from_numpy(fashion_source.test.images).permute(0, 3, 1, 2).expand(-1, 3, -1, -1)
    assert torch.equal(unnormalize(images, fashion), source)
    assert labels.tolist() == fashion_source.test.labels.tolist()


def test_a_finished_beton_has_a_sidecar_and_no_temporary_file(fashion):
    meta = read_json(sidecar(fashion.train_file))
    assert meta["num_samples"] == 600 and meta["encoding"] == "raw"
    assert meta["bytes"] == fashion.train_file.stat().st_size
    assert not [p.name for p in fashion.data_dir.iterdir() if p.name.startswith(".")]


def test_prepare_again_rewrites_no_beton(fashion):
    before = {p.name: p.stat().st_mtime_ns for p in fashion.data_dir.glob("fashion_mnist.*")}
    prepare(fashion.spec, fashion.data_dir, progress=False)
    assert {
        p.name: p.stat().st_mtime_ns for p in fashion.data_dir.glob("fashion_mnist.*")
    } == before


def test_a_subset_reads_only_its_classes_remapped(subset, fashion_source):
    prepared, _, test = subset
    kept = prepared.selection.classes
    images, labels = (
        torch.cat(t) for t in zip(*[(x.clone(), y.clone()) for x, y in test], strict=True)
    )
    assert (prepared.num_test, len(test)) == (90, 2)
    assert torch.bincount(labels).tolist() == [30, 30, 30]
    rows = np.flatnonzero(np.isin(fashion_source.test.labels, kept))
    remap = {c: i for i, c in enumerate(kept)}
    assert labels.tolist() == [remap[c] for c in fashion_source.test.labels[rows]]
    expected = torch.from_numpy(fashion_source.test.images[rows]).permute(0, 3, 1, 2)
    assert torch.equal(unnormalize(images, prepared)[:, :1], expected)


def test_training_epochs_are_deterministic_per_seed_and_epoch_on_one_loader(subset):
    _, train, _ = subset

    def run(seed, epoch):
        return [(x.clone(), y.clone()) for x, y in train.epoch(seed=seed, epoch=epoch)]

    first = run(1, 0)
    loader = train.loader
    again, later = run(1, 0), run(1, 1)
    assert train.loader is loader  # reseeded, not rebuilt
    assert len(first) == len(train) == 180 // 50
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, again, strict=True)
    )
    assert not torch.equal(first[0][1], later[0][1])
    images, labels = first[0]
    assert (images.shape, images.dtype, labels.dtype) == (
        (50, 3, 28, 28),
        torch.float32,
        torch.int64,
    )
    assert set(torch.cat([y for _, y in first]).tolist()) == {0, 1, 2}


def test_epochs_after_the_first_reuse_its_buffers(subset):
    _, train, _ = subset
    for _ in train.epoch(seed=2, epoch=0):
        pass
    fresh = train.loader.kept.fresh
    for epoch in (1, 2, 3):
        for _ in train.epoch(seed=2, epoch=epoch):
            pass
    assert train.loader.kept.fresh == fresh


def test_an_abandoned_epoch_leaves_the_next_epochs_batches_intact(subset):
    _, train, _ = subset

    def run(seed, epoch):
        return [(x.clone(), y.clone()) for x, y in train.epoch(seed=seed, epoch=epoch)]

    expected = run(3, 1)
    abandoned = train.epoch(seed=3, epoch=0)
    next(abandoned)
    abandoned.close()  # its thread may still be decoding into its buffers
    again = run(3, 1)
    assert len(again) == len(expected) == 3
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(expected, again, strict=True)
    )


def test_torch_threads_are_restored_after_ffcv_runs(subset):
    _, train, _ = subset
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in train.epoch(seed=0, epoch=0):
            pass
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_loader_thread_that_fails_raises_instead_of_hanging(fashion_test_batches):
    test, _ = fashion_test_batches

    def broken(**_):
        raise ValueError("a decoder failed")

    code = test.loader.code
    test.loader.code = ([(broken, [])], [])
    try:
        with pytest.raises(
            RuntimeError, match="ffcv loader of .*fashion_mnist.test.beton stopped: ValueError"
        ):
            next(iter(test))
    finally:
        test.loader.code = code


def test_a_stalled_loader_raises_after_its_timeout(fashion_test_batches):
    test, _ = fashion_test_batches
    stop = __import__("threading").Event()

    def stuck(**_):
        stop.wait(30)
        return ()

    code, timeout = test.loader.code, test.timeout
    test.loader.code, test.timeout = ([(stuck, [])], []), 1.0
    try:
        with pytest.raises(RuntimeError, match="gave no batch in 1 s"):
            next(iter(test))
    finally:
        stop.set()
        test.loader.code, test.timeout = code, timeout


def test_a_truncated_beton_is_refused_naming_it(fashion, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(fashion.data_dir, copy)
    beton = copy / "fashion_mnist.test.beton"
    with open(beton, "r+b") as f:
        f.truncate(beton.stat().st_size // 2)
    with pytest.raises(
        DatasetError, match=r"fashion_mnist.test.beton: \d+ bytes but \d+ were written \(truncated"
    ):
        open_prepared(fashion.spec, copy)
    with pytest.raises(DatasetError, match="fashion_mnist.test.beton: truncated"):
        check_beton(beton)


def test_a_jpeg_beton_decodes_close_to_the_source(tmp_path, make_imagenet):
    root = make_imagenet(tmp_path / "imagenet", train_per_class=2, val_per_class=2)
    spec = get_dataset(
        "imagenet",
        path=str(root),
        num_classes=3,
        backend="ffcv",
        encoding="jpg",
        max_side=64,
        resolution=48,
    )
    prepared = prepare(spec, tmp_path / "data", progress=False)
    _, test = build_loaders(prepared, batch_size=8, augment="pad_crop", normalize=False)
    images, labels = next(iter(test))
    source = load_source(spec).test
    expected = np.stack([square(fit_max_side(source.image(i), 64), 48) for i in range(6)])
    error = (images.permute(0, 2, 3, 1).float() - torch.from_numpy(expected).float()).abs().mean()
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert images.shape == (6, 3, 48, 48) and error < 4.0


def test_an_image_that_fails_to_decode_stops_the_write_naming_it(tmp_path, elpv_images):
    for split, count in (("train", 5), ("val", 2)):
        for c in ("a", "b"):
            (tmp_path / "src" / split / c).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(elpv_images[i]).save(tmp_path / "src" / split / c / f"{i}.png")
    broken = tmp_path / "src" / "train" / "b" / "3.png"
    broken.write_bytes(broken.read_bytes()[:2000])  # the header survives, the pixels do not
    spec = get_dataset("cells", source="folder", path=str(tmp_path / "src"), backend="ffcv")
    with pytest.raises(
        DatasetError,
        match=r"1 of 10 images could not be read:\n  .*train/b/3.png: cannot read the image .*truncated",
    ):
        prepare(spec, tmp_path / "data", progress=False)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


class _StuckImages:
    """Images of which the third never arrives, as from a hung network filesystem."""

    shape = (4, 8, 8, 3)

    def __getitem__(self, i: int) -> np.ndarray:
        if i == 2:
            __import__("time").sleep(3600)
        return np.full((8, 8, 3), i, np.uint8)


def test_a_stalled_writer_is_stopped_with_an_error_and_leaves_nothing(tmp_path):
    from loaders.beton import write_beton
    from loaders.sources import Split

    split = Split(np.zeros(4, np.int64), 3, images=_StuckImages())
    with pytest.raises(
        RuntimeError,
        match=r"writing .*stuck.beton stalled: no sample finished in 2 s \(\d of 4 done\)",
    ):
        write_beton(
            split, tmp_path / "stuck.beton", "fp", num_workers=1, progress=False, stall_seconds=2
        )
    assert list(tmp_path.iterdir()) == []
