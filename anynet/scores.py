"""Training-free ("zero-cost") scores of an architecture at initialisation, from one minibatch:
NASWOT, synflow, grad_norm, snip, jacob_cov, and the parameter and FLOP counts they must beat.

Every score is oriented so that a higher value is meant to predict a lower trained error.
The network is scored in training mode (BatchNorm on batch statistics), as the papers'
reference code does; each score works on its own copy of the model, which it leaves as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from anynet.arch import Architecture
from anynet.complexity import complexity
from anynet.model import build_model

SCORES = ("naswot", "synflow", "grad_norm", "snip", "jacob_cov", "params", "flops")
"""Names of every score, in the order `compute_scores` returns them."""

JACOB_COV_K = 1e-5  # the eigenvalue offset of Mellor et al.'s correlation score


def compute_scores(
    arch: Architecture,
    num_classes: int,
    in_channels: int,
    minibatch: tuple[torch.Tensor, torch.Tensor],
    seed: int,
) -> dict[str, float]:
    """Every score of SCORES for ``arch`` initialised as `build_model` does after
    ``torch.manual_seed(seed)``, on ``minibatch`` = (images N,C,H,W float, labels N int64).

    The caller's global torch RNG is left as it was. params and flops are counted at the
    minibatch's resolution (its H; images are square) with ``num_classes``."""
    images, labels = _check_minibatch(minibatch, in_channels)
    model = seeded_model(arch, num_classes, in_channels, seed)
    cx = complexity(arch, images.shape[-1], num_classes, in_channels)
    return {
        "naswot": naswot(model, images),
        "synflow": synflow(model, images),
        **grad_norm_and_snip(model, images, labels),
        "jacob_cov": jacob_cov(model, images),
        "params": float(cx.params),
        "flops": float(cx.flops),
    }


def seeded_model(arch: Architecture, num_classes: int, in_channels: int, seed: int) -> nn.Module:
    """The network `build_model` gives right after ``torch.manual_seed(seed)``, without
    touching the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, num_classes, in_channels)


def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """Mellor et al. 2021: log|K| where K[i, j] = N_A - Hamming(c_i, c_j) and c_i is the
    binary pattern (unit > 0) of every ReLU unit of the network on image i."""
    net = _working_copy(model)
    codes: list[torch.Tensor] = []

    def record(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        # float32 counts 0/1 products exactly up to 2**24 units, and is faster than float64.
        codes.append((out.detach() > 0).flatten(1).to(torch.float32))

    handles = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for handle in handles:
            handle.remove()
    c = torch.cat(codes, dim=1)
    # Agreements = N_A - Hamming = both on + both off, and both off = N_A - r_i - r_j + both
    # on (r: units on per image): one product instead of two.
    on = (c @ c.T).to(torch.float64)
    r = c.sum(dim=1, dtype=torch.float64)
    kernel = 2 * on - r[:, None] - r[None, :] + c.shape[1]
    _sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(_sign) > 0 else float("-inf")


def synflow(model: nn.Module, images: torch.Tensor) -> float:
    """Tanaka et al. 2020 as Abdelfattah et al. 2021 score it: in float64 with every weight
    replaced by its absolute value, R = sum of the outputs for an all-ones input of the
    images' shape; the score is sum |W * dR/dW| over conv and linear weights.

    BatchNorm is in eval mode: at initialisation (running mean 0, variance 1, gamma 1,
    beta 0) it is the identity up to 1/sqrt(1 + eps), the BN-free network the paper scores;
    a batch of one constant image would otherwise be normalised away."""
    net = _working_copy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64)
    net(ones).sum().backward()
    return _sum_over_weights(net, lambda w, g: (w * g).abs().sum())


def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Abdelfattah et al. 2021: sum over conv and linear layers of the Frobenius norm of
    the cross-entropy loss's gradient with respect to the layer's weight."""
    return grad_norm_and_snip(model, images, labels)["grad_norm"]


def snip(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Lee et al. 2019, summed over the network as Abdelfattah et al. 2021 do:
    sum |W * dL/dW| over conv and linear weights, L the minibatch's cross-entropy loss."""
    return grad_norm_and_snip(model, images, labels)["snip"]


def grad_norm_and_snip(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """grad_norm and snip from one backward pass of the loss."""
    net = _backward_loss(model, images, labels)
    return {
        "grad_norm": _sum_over_weights(net, lambda _w, g: g.norm()),
        "snip": _sum_over_weights(net, lambda w, g: (w * g).abs().sum()),
    }


def jacob_cov(model: nn.Module, images: torch.Tensor) -> float:
    """Mellor et al. 2020 (v1): J_i = d(sum of the logits of image i)/d image i, flattened;
    with v the eigenvalues of the N x N correlation matrix of the J_i and k = 1e-5,
    the score is -sum(log(v + k) + 1 / (v + k)). NaN when some J_i is constant."""
    net = _working_copy(model)
    x = images.detach().clone().requires_grad_(True)
    net(x).sum().backward()
    assert x.grad is not None
    jac = x.grad.flatten(1).to(torch.float64).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(jac)
    if not np.isfinite(corr).all():
        return float("nan")
    v = np.linalg.eigvalsh(corr)
    return float(-np.sum(np.log(v + JACOB_COV_K) + 1.0 / (v + JACOB_COV_K)))


def _working_copy(model: nn.Module) -> nn.Module:
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    return net


def _backward_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    net = _working_copy(model)
    nn.functional.cross_entropy(net(images), labels).backward()
    return net


def _weights(net: nn.Module) -> Iterator[torch.Tensor]:
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            yield m.weight


def _sum_over_weights(
    net: nn.Module, term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> float:
    """The sum over conv and linear weights of term(weight, its gradient), in float64."""
    total = 0.0
    with torch.no_grad():
        for w in _weights(net):
            if w.grad is not None:
                total += float(term(w.double(), w.grad.double()))
    return total


def _check_minibatch(
    minibatch: tuple[torch.Tensor, torch.Tensor], in_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = minibatch
    if images.ndim != 4 or images.shape[1] != in_channels or images.shape[2] != images.shape[3]:
        raise ValueError(
            f"images must be N,{in_channels},H,H (square, {in_channels} channels), "
            f"got shape {tuple(images.shape)}"
        )
    if images.shape[0] < 2 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"a minibatch needs at least 2 images and one label each, got {images.shape[0]} "
            f"images and labels of shape {tuple(labels.shape)}"
        )
    # One memory layout, whatever the loader gives (channels_last on CUDA and from ffcv):
    # float32 gradients differ in their last bits between layouts.
    return images.float().contiguous(), labels.long()
