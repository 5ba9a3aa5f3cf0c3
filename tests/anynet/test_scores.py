"""Training-free scores: hand-computed values on tiny networks, a real AnyNet (BatchNorm,
group convs) against literal values that an independent plain-torch/numpy computation in this
file reproduces, determinism, and bad input."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from anynet.arch import Architecture
from anynet.model import build_model
from anynet.scores import (
    SCORES,
    compute_scores,
    grad_norm,
    jacob_cov,
    naswot,
    seeded_model,
    snip,
    synflow,
)

# Two stages, groups 4 and 2 in the 3x3 convs (bottleneck widths 16 and 16), BatchNorm.
ARCH = Architecture((1, 2), (16, 32), (1, 2), (4, 8), stem_width=8)
CLASSES = 10
SEED = 0
# compute_scores(ARCH, 10, 3, _minibatch(), 0), reproduced by the _reference_* functions.
LITERAL = {
    "naswot": 59.881983130585816,
    "synflow": 26373060.55917309,
    "grad_norm": 2.4586097278629064,
    "snip": 2.204657982164961,
    "jacob_cov": -8.245085417637384,
    "params": 6706.0,
    "flops": 59210.0,
}


def _minibatch(n=8, res=16):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, res, res, generator=gen), torch.randint(
        0, CLASSES, (n,), generator=gen
    )


def _linear(weight, bias=None):
    layer = nn.Linear(len(weight[0]), len(weight), bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


# --- hand-computed values on tiny networks ------------------------------------------------


def test_naswot_of_three_inputs_is_log_of_the_hand_kernel_determinant():
    """Units relu(x), relu(-x), relu(x - 1.5) on x = 1, 2, -1 give codes 100, 101, 010;
    Hamming distances 1, 2, 3 (pairs 12, 13, 23), so K = 3 - d = [[3,2,1],[2,3,0],[1,0,3]]
    and det K = 3*9 - 2*6 + 1*(-3) = 12."""
    net = nn.Sequential(_linear([[1.0], [-1.0], [1.0]], [0.0, 0.0, -1.5]), nn.ReLU())
    assert naswot(net, torch.tensor([[1.0], [2.0], [-1.0]])) == pytest.approx(math.log(12))


def test_naswot_of_inputs_with_one_pattern_is_minus_infinity():
    """Identical codes make K all N_A: rank one, determinant 0."""
    net = nn.Sequential(_linear([[1.0], [-1.0]]), nn.ReLU())
    assert naswot(net, torch.tensor([[1.0], [2.0]])) == -math.inf


def test_synflow_of_a_two_layer_net_is_twice_its_path_norm():
    """|W1| = [[1,2],[3,.5]], |W2| = [1,2], input ones: hidden h = (3, 3.5), R = 3 + 7 = 10.
    Layer 2: |W2 * h| sums to 3 + 7 = 10; layer 1: dR/dW1[j,k] = |W2[j]|, so
    |W1 * dR/dW1| = 1 + 2 + 6 + 1 = 10. Total 20 (each layer conserves R)."""
    net = nn.Sequential(_linear([[1.0, -2.0], [3.0, 0.5]]), nn.ReLU(), _linear([[-1.0, 2.0]]))
    assert synflow(net, torch.zeros(4, 2)) == pytest.approx(20.0)


def test_synflow_leaves_the_callers_model_as_it_was():
    net = nn.Sequential(_linear([[1.0, -2.0], [3.0, 0.5]]), nn.ReLU(), _linear([[-1.0, 2.0]]))
    synflow(net, torch.zeros(4, 2))
    assert net[0].weight.tolist() == [[1.0, -2.0], [3.0, 0.5]]
    assert net[0].weight.dtype == torch.float32 and net[0].weight.grad is None


def _identity_classifier():
    """W = I, x = (1, 2), label 0: logits (1, 2), p1 = a = e / (1 + e), dL/dz = (-a, a),
    dL/dW = dz x^T = [[-a, -2a], [a, 2a]]."""
    return _linear([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 2.0]]), torch.tensor([0])


def test_grad_norm_of_an_identity_classifier_is_a_sqrt_10():
    """||dL/dW||_F = a * sqrt(1 + 4 + 1 + 4)."""
    a = math.e / (1 + math.e)
    assert grad_norm(*_identity_classifier()) == pytest.approx(a * math.sqrt(10))


def test_snip_of_an_identity_classifier_is_3a():
    """sum |W * dL/dW| = |1 * -a| + |1 * 2a| (the off-diagonal weights are 0)."""
    a = math.e / (1 + math.e)
    assert snip(*_identity_classifier()) == pytest.approx(3 * a)


def test_jacob_cov_of_two_relu_patterns_is_the_hand_eigenvalue_sum():
    """f(x) = sum relu(x) on x1 = (1,1,-1), x2 = (1,-1,1): J1 = (1,1,0), J2 = (1,0,1);
    centred (1,1,-2)/3 and (1,-2,1)/3, correlation -3/6 = -1/2, so the correlation matrix
    [[1, -.5], [-.5, 1]] has eigenvalues 1.5 and 0.5."""
    net = nn.Sequential(nn.ReLU(), nn.Flatten())
    x = torch.tensor([[1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])
    k = 1e-5
    expected = -sum(math.log(v + k) + 1 / (v + k) for v in (1.5, 0.5))
    assert jacob_cov(net, x) == pytest.approx(expected, rel=1e-12)


def test_params_and_flops_of_a_one_block_network_are_the_hand_counts():
    """Stem 3->8 3x3 (216 weights, BN 16) on 8 px -> 4x4; one X block 8->8, stride 2,
    groups 1: proj 64 + BN 16, a 64 + 16, b 576 + 16, c 64 + 16; head 8*2 + 2.
    params = 216+16 + 64+16 + 64+16 + 576+16 + 64+16 + 18 = 1082.
    flops = stem 216*16 + proj 64*4 + a 64*16 + b 576*4 + c 64*4 + head 16 + 2 bias adds
          = 3456 + 256 + 1024 + 2304 + 256 + 18 = 7314."""
    arch = Architecture((1,), (8,), (1,), (8,), stem_width=8)
    scores = compute_scores(arch, 2, 3, (torch.randn(2, 3, 8, 8), torch.tensor([0, 1])), 0)
    assert (scores["params"], scores["flops"]) == (1082.0, 7314.0)


# --- a real AnyNet against literal values and an independent computation -------------------


def _reference_naswot(model, images):
    codes = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: codes.append(out.detach().flatten(1) > 0))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]
    with torch.no_grad():
        model.train()(images)
    for h in hooks:
        h.remove()
    c = np.concatenate([x.numpy() for x in codes], axis=1)
    hamming = (c[:, None, :] != c[None, :, :]).sum(-1)
    return np.linalg.slogdet((c.shape[1] - hamming).astype(np.float64))[1]


def _conv_and_linear_weights(model):
    return [p for name, p in model.named_parameters() if name.endswith("weight") and p.ndim > 1]


def _reference_synflow(model, images):
    model = model.double().eval()
    for p in model.parameters():
        p.data = p.data.abs()
    weights = _conv_and_linear_weights(model)
    out = model(torch.ones((1, *images.shape[1:]), dtype=torch.float64)).sum()
    grads = torch.autograd.grad(out, weights)
    return sum(float((w * g).abs().sum().detach()) for w, g in zip(weights, grads, strict=True))


def _reference_loss_grads(model, images, labels):
    weights = _conv_and_linear_weights(model.train())
    loss = nn.functional.cross_entropy(model(images), labels)
    return weights, torch.autograd.grad(loss, weights)


def _reference_grad_norm(model, images, labels):
    _, grads = _reference_loss_grads(model, images, labels)
    return sum(math.sqrt(float((g.double() ** 2).sum())) for g in grads)


def _reference_snip(model, images, labels):
    weights, grads = _reference_loss_grads(model, images, labels)
    return sum(
        float((w.double() * g.double()).abs().sum().detach())
        for w, g in zip(weights, grads, strict=True)
    )


def _reference_jacob_cov(model, images):
    x = images.clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(model.train()(x).sum(), x)
    v = torch.linalg.eigvalsh(torch.corrcoef(jac.flatten(1).double()))
    return float(-(torch.log(v + 1e-5) + 1 / (v + 1e-5)).sum())


def _reference_flops(model, images):
    counts = []

    def count(m, _inp, out):
        per_output = m.weight[0].numel()  # in_channels / groups * kh * kw, or in_features
        counts.append(out[0].numel() * per_output + (m.out_features if m.bias is not None else 0))

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(images[:1])
    for h in hooks:
        h.remove()
    return float(sum(counts))


REFERENCES = {
    "naswot": lambda m, x, y: _reference_naswot(m, x),
    "synflow": lambda m, x, y: _reference_synflow(m, x),
    "grad_norm": _reference_grad_norm,
    "snip": _reference_snip,
    "jacob_cov": lambda m, x, y: _reference_jacob_cov(m, x),
    "params": lambda m, x, y: float(sum(p.numel() for p in m.parameters())),
    "flops": lambda m, x, y: _reference_flops(m, x),
}


@pytest.fixture(scope="module")
def real_scores():
    return compute_scores(ARCH, CLASSES, 3, _minibatch(), SEED)


@pytest.mark.parametrize("name", SCORES)
def test_score_of_a_real_anynet_is_the_literal_value(real_scores, name):
    assert real_scores[name] == pytest.approx(LITERAL[name], rel=1e-6)


@pytest.mark.parametrize("name", SCORES)
def test_independent_computation_gives_the_literal_value(name):
    torch.manual_seed(SEED)  # as hpc's training seeds a cell before build_model
    model = build_model(ARCH, CLASSES, 3)
    assert REFERENCES[name](model, *_minibatch()) == pytest.approx(LITERAL[name], rel=1e-6)


def test_scores_come_in_the_order_of_SCORES(real_scores):
    assert tuple(real_scores) == SCORES


# --- determinism, seeds, the caller's RNG, bad input -------------------------------------


def test_same_seed_and_minibatch_give_the_same_numbers(real_scores):
    assert compute_scores(ARCH, CLASSES, 3, _minibatch(), SEED) == real_scores


def test_a_channels_last_minibatch_gives_the_same_numbers(real_scores):
    images, labels = _minibatch()
    images = images.contiguous(memory_format=torch.channels_last)
    assert compute_scores(ARCH, CLASSES, 3, (images, labels), SEED) == real_scores


def test_another_seed_changes_the_data_dependent_scores(real_scores):
    other = compute_scores(ARCH, CLASSES, 3, _minibatch(), SEED + 1)
    assert [other[n] == real_scores[n] for n in SCORES] == [False] * 5 + [True] * 2


def test_seeded_model_is_the_network_built_after_manual_seed():
    torch.manual_seed(7)
    built = build_model(ARCH, CLASSES, 3)
    scored = seeded_model(ARCH, CLASSES, 3, 7)
    assert all(
        torch.equal(a, b)
        for a, b in zip(built.state_dict().values(), scored.state_dict().values(), strict=True)
    )


def test_computing_scores_leaves_the_global_rng_as_it_was():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    compute_scores(ARCH, CLASSES, 3, _minibatch(), SEED)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.zeros(4, 1, 16, 16), torch.zeros(4), "images must be N,3,H,H"),
        (torch.zeros(4, 3, 16, 12), torch.zeros(4), "images must be N,3,H,H"),
        (torch.zeros(1, 3, 16, 16), torch.zeros(1), "at least 2 images"),
        (torch.zeros(4, 3, 16, 16), torch.zeros(3), "at least 2 images and one label each"),
    ],
)
def test_a_bad_minibatch_is_refused_before_any_compute(images, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_scores(ARCH, CLASSES, 3, (images, labels), SEED)
