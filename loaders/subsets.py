"""Index selection: subsets of k classes and size controls of n training images (each nested
for one seed), seeded stratified splits and caps. Everything here returns indices into a
parent's labels; no image is copied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loaders.registry import DatasetError


@dataclass(frozen=True)
class ClassSelection:
    """k classes of a parent: `classes[i]` (a parent label) becomes label i."""

    classes: tuple[int, ...]
    num_parent_classes: int

    @property
    def label_map(self) -> np.ndarray:
        """Parent label -> subset label, -1 for the classes left out."""
        table = np.full(self.num_parent_classes, -1, dtype=np.int64)
        table[list(self.classes)] = np.arange(len(self.classes))
        return table

    def indices(self, parent_labels: np.ndarray) -> np.ndarray:
        """Positions (ascending) of the parent's samples whose class is kept."""
        return np.flatnonzero(np.isin(parent_labels, self.classes)).astype(np.int64)


def seeded_classes(num_classes: int, k: int, seed: int) -> tuple[int, ...]:
    """k of num_classes classes, nested in k for one seed: the first k of a seeded permutation
    (sorted, so subset labels keep the parent's order)."""
    if not 1 <= k <= num_classes:
        raise DatasetError(f"k={k} must be between 1 and the parent's {num_classes} classes")
    order = np.random.default_rng(seed).permutation(num_classes)
    return tuple(sorted(int(c) for c in order[:k]))


def select_classes(
    num_classes: int,
    class_names: Sequence[str],
    k: int | None,
    seed: int,
    classes: Sequence[int | str] | None,
) -> ClassSelection:
    """Listed classes (parent indices or names) or k seeded ones."""
    if classes is None:
        if k is None:
            raise DatasetError("a subset needs k or classes")
        return ClassSelection(seeded_classes(num_classes, k, seed), num_classes)
    chosen = []
    for c in classes:
        if isinstance(c, str):
            if c not in class_names:
                raise DatasetError(
                    f"class {c!r} is not a class of the parent; its classes: "
                    f"{_preview(class_names)}"
                )
            chosen.append(list(class_names).index(c))
        elif isinstance(c, (int, np.integer)) and 0 <= int(c) < num_classes:
            chosen.append(int(c))
        else:
            raise DatasetError(f"class {c!r} is outside the parent's classes 0..{num_classes - 1}")
    if len(set(chosen)) != len(chosen):
        raise DatasetError(f"classes {list(classes)} name one class twice")
    return ClassSelection(tuple(chosen), num_classes)


def _preview(names: Sequence[str], n: int = 12) -> str:
    shown = ", ".join(map(str, names[:n]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _per_class_counts(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` over classes in proportion to `counts`, by largest remainder."""
    exact = counts * (total / counts.sum())
    take = np.floor(exact).astype(np.int64)
    short = total - int(take.sum())
    order = np.argsort(-(exact - take), kind="stable")
    take[order[:short]] += 1
    return np.minimum(take, counts)


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions, each ascending: round(test_fraction * n_c) of each class tested."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(np.floor(len(members) * test_fraction + 0.5))
        shuffled = rng.permutation(members)
        test.append(shuffled[:n_test])
        train.append(shuffled[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def stratified_cap(labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Ascending positions of at most `cap` samples, classes kept in proportion (seeded)."""
    if cap is None or cap >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    take = _per_class_counts(counts, cap)
    rng = np.random.default_rng(seed)
    kept = [
        rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def control_order(labels: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Every position of `labels` in the order a size control takes them: a control of n
    images keeps the first n, so controls of one seed are nested in n.

    The class of each next image follows Sainte-Lague's divisor method with one image per
    class first: after one image of every class, the next goes to the class with the highest
    n_c / (2 a_c + 1) (n_c its images in `labels`, a_c those it already gave; a class with
    none left is done). Equal priorities go to the class earlier in a seeded permutation of
    the classes. Within a class, images are taken in a seeded permutation. So every prefix of
    at least `num_classes` images holds every class, in the parent's proportions as near as
    whole images allow (the same counts as Sainte-Lague's apportionment whenever that gives
    every class an image)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    if len(counts) != num_classes or (counts == 0).any():
        raise DatasetError(
            f"a size control needs labels in 0..{num_classes - 1} with every class present"
        )
    rng = np.random.default_rng(seed)
    class_rank = np.argsort(rng.permutation(num_classes))
    # Positions grouped by class, shuffled within each class; a = rank within the class.
    grouped = np.lexsort((rng.random(len(labels)), labels))
    sorted_labels = labels[grouped]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    a = np.arange(len(labels)) - starts[sorted_labels]
    # Ordered exactly in float64: rounding is monotone, and two unequal n / (2a + 1) with
    # n < 2**25 differ by more than one unit in the last place.
    priority = np.where(a == 0, np.inf, counts[sorted_labels] / (2.0 * a + 1.0))
    return grouped[np.lexsort((class_rank[sorted_labels], -priority))]


def control_indices(labels: np.ndarray, num_classes: int, n: int, seed: int) -> np.ndarray:
    """Ascending positions of a size control's n images: the first n of `control_order`."""
    if not num_classes <= n <= len(labels):
        raise DatasetError(
            f"n={n} must be between the {num_classes} classes and the {len(labels)} images"
        )
    return np.sort(control_order(labels, num_classes, seed)[:n])
