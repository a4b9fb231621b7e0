"""Textbook equations against PyTorch: backprop by hand vs autograd, optimizers vs torch.optim.

Part 1 follows the seed's derivation of error backpropagation for a one-hidden-layer network with
sigmoid hidden and output units and squared error. Part 2 writes each optimizer's update equations
in numpy and checks that three steps of ``torch.optim`` produce the same iterates. The conventions
(where epsilon sits, what the accumulators start at) were read from torch's own implementation,
``torch/optim/{sgd,adagrad,rmsprop,adam}.py`` (``_single_tensor_*``), torch 2.13.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

# --------------------------------------------------------------------------------------------------
# Part 1: backpropagation for a one-hidden-layer sigmoid network (the seed's notation)
# --------------------------------------------------------------------------------------------------


class SeedNet(nn.Module):
    """d inputs x_i, q sigmoid hidden units b_h, l sigmoid outputs yhat_j, with explicit thresholds.

    alpha_h = sum_i v_ih x_i,   b_h = f(alpha_h - gamma_h)
    beta_j  = sum_h w_hj b_h,   yhat_j = f(beta_j - theta_j),   f = sigmoid
    """

    def __init__(self, d: int, q: int, l: int, gen: torch.Generator) -> None:
        super().__init__()
        kw = dict(generator=gen, dtype=torch.float64)
        self.v = nn.Parameter(torch.randn(d, q, **kw))  # v_ih: input i -> hidden h
        self.gamma = nn.Parameter(torch.randn(q, **kw))  # gamma_h: hidden thresholds
        self.w = nn.Parameter(torch.randn(q, l, **kw))  # w_hj: hidden h -> output j
        self.theta = nn.Parameter(torch.randn(l, **kw))  # theta_j: output thresholds

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = torch.sigmoid(x @ self.v - self.gamma)  # (q,)
        y_hat = torch.sigmoid(b @ self.w - self.theta)  # (l,)
        return b, y_hat


def seed_updates(
    net: SeedNet, x: torch.Tensor, y: torch.Tensor, eta: float
) -> dict[str, torch.Tensor]:
    """The seed's hand-derived updates for one sample, E = 1/2 sum_j (yhat_j - y_j)^2:

    g_j = yhat_j (1 - yhat_j) (y_j - yhat_j)        e_h = b_h (1 - b_h) sum_j w_hj g_j
    dw_hj = eta g_j b_h     dtheta_j = -eta g_j     dv_ih = eta e_h x_i     dgamma_h = -eta e_h
    """
    with torch.no_grad():
        b, y_hat = net(x)
        g = y_hat * (1 - y_hat) * (y - y_hat)  # (l,)
        e = b * (1 - b) * (net.w @ g)  # (q,)
        return {
            "w": eta * torch.outer(b, g),  # (q, l)
            "theta": -eta * g,  # (l,)
            "v": eta * torch.outer(x, e),  # (d, q)
            "gamma": -eta * e,  # (q,)
        }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seed_backprop_equals_minus_eta_times_autograd(seed):
    """Each hand-derived update equals -eta * dE/dparam from autograd (float64, within 1e-6),
    and one torch.optim.SGD step with lr=eta applies exactly those updates."""
    gen = torch.Generator().manual_seed(seed)
    d, q, l, eta = 4, 5, 3, 0.1
    net = SeedNet(d, q, l, gen)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    y = torch.rand(l, generator=gen, dtype=torch.float64)

    by_hand = seed_updates(net, x, y, eta)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}

    _, y_hat = net(x)
    error = 0.5 * ((y_hat - y) ** 2).sum()
    error.backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(by_hand[name], -eta * p.grad, rtol=0, atol=1e-6)

    torch.optim.SGD(net.parameters(), lr=eta).step()
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] + by_hand[name], rtol=0, atol=1e-12)


def test_seed_backprop_with_nn_linear():
    """The same network from nn.Linear: weight = v^T (resp. w^T) and bias = -gamma (resp. -theta),
    so autograd's step on weight is dv^T and on bias is -dgamma (the thresholds subtract)."""
    gen = torch.Generator().manual_seed(3)
    d, q, l, eta = 4, 5, 3, 0.5
    seed_net = SeedNet(d, q, l, gen)
    hidden = nn.Linear(d, q, dtype=torch.float64)
    output = nn.Linear(q, l, dtype=torch.float64)
    with torch.no_grad():
        hidden.weight.copy_(seed_net.v.T)
        hidden.bias.copy_(-seed_net.gamma)
        output.weight.copy_(seed_net.w.T)
        output.bias.copy_(-seed_net.theta)
    x = torch.randn(d, generator=gen, dtype=torch.float64)
    y = torch.rand(l, generator=gen, dtype=torch.float64)

    by_hand = seed_updates(seed_net, x, y, eta)
    y_hat = torch.sigmoid(output(torch.sigmoid(hidden(x))))
    (0.5 * ((y_hat - y) ** 2).sum()).backward()
    torch.testing.assert_close(-eta * hidden.weight.grad, by_hand["v"].T, rtol=0, atol=1e-6)
    torch.testing.assert_close(-eta * hidden.bias.grad, -by_hand["gamma"], rtol=0, atol=1e-6)
    torch.testing.assert_close(-eta * output.weight.grad, by_hand["w"].T, rtol=0, atol=1e-6)
    torch.testing.assert_close(-eta * output.bias.grad, -by_hand["theta"], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Part 2: optimizer update equations vs torch.optim
# --------------------------------------------------------------------------------------------------

STEPS = 3


class Quadratic:
    """f(theta) = 1/2 theta^T A theta - c^T theta, A SPD; grad = A theta - c"""

    def __init__(self, n: int = 6, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        m = rng.standard_normal((n, n))
        a = m.T @ m + np.eye(n)
        self.a = (a + a.T) / 2  # exactly symmetric, so autograd's (A + A^T)/2 theta matches
        self.c = rng.standard_normal(n)
        self.theta0 = rng.standard_normal(n)

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return self.a @ theta - self.c

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        a, c = torch.from_numpy(self.a), torch.from_numpy(self.c)
        return 0.5 * theta @ a @ theta - c @ theta


# Each reference is a generator: it receives the gradient function and yields theta after each step.


def sgd(theta, grad, lr):
    """theta <- theta - lr g"""
    while True:
        theta = theta - lr * grad(theta)
        yield theta


def sgd_momentum(theta, grad, lr, momentum):
    """v <- mu v + g, theta <- theta - lr v (v starts at 0, so v_1 = g_1: torch's buffer init)"""
    v = np.zeros_like(theta)
    while True:
        v = momentum * v + grad(theta)
        theta = theta - lr * v
        yield theta


def adagrad(theta, grad, lr, eps, initial_accumulator_value=0.0):
    """G <- G + g^2, theta <- theta - lr g / (sqrt(G) + eps); G starts at initial_accumulator_value
    (torch's lr_decay, default 0, is left at 0)"""
    big_g = np.full_like(theta, initial_accumulator_value)
    while True:
        g = grad(theta)
        big_g = big_g + g * g
        theta = theta - lr * g / (np.sqrt(big_g) + eps)
        yield theta


def rmsprop(theta, grad, lr, alpha, eps):
    """E[g^2] <- rho E[g^2] + (1 - rho) g^2 (starts at 0; torch calls rho alpha),
    theta <- theta - lr g / (sqrt(E[g^2]) + eps)"""
    sq = np.zeros_like(theta)
    while True:
        g = grad(theta)
        sq = alpha * sq + (1 - alpha) * g * g
        theta = theta - lr * g / (np.sqrt(sq) + eps)
        yield theta


def adam(theta, grad, lr, betas, eps):
    """m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2  (both start at 0, t counts from 1),
    m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t),
    theta <- theta - lr m_hat / (sqrt(v_hat) + eps)"""
    b1, b2 = betas
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    t = 0
    while True:
        t += 1
        g = grad(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        yield theta


# (id, torch optimizer class, its kwargs, our reference, our reference's kwargs)
# Some cases use a large eps so that putting it in the wrong place (e.g. inside the sqrt) would
# change the iterates far beyond the 1e-10 tolerance.
CASES = [
    ("sgd", torch.optim.SGD, {"lr": 0.05}, sgd, {"lr": 0.05}),
    (
        "momentum",
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9},
        sgd_momentum,
        {"lr": 0.05, "momentum": 0.9},
    ),
    ("adagrad", torch.optim.Adagrad, {"lr": 0.3}, adagrad, {"lr": 0.3, "eps": 1e-10}),
    (
        "adagrad-eps-init",
        torch.optim.Adagrad,
        {"lr": 0.3, "eps": 0.1, "initial_accumulator_value": 0.5},
        adagrad,
        {"lr": 0.3, "eps": 0.1, "initial_accumulator_value": 0.5},
    ),
    (
        "rmsprop",
        torch.optim.RMSprop,
        {"lr": 0.01},
        rmsprop,
        {"lr": 0.01, "alpha": 0.99, "eps": 1e-8},
    ),
    (
        "rmsprop-eps",
        torch.optim.RMSprop,
        {"lr": 0.01, "alpha": 0.9, "eps": 0.1},
        rmsprop,
        {"lr": 0.01, "alpha": 0.9, "eps": 0.1},
    ),
    ("adam", torch.optim.Adam, {"lr": 0.1}, adam, {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8}),
    (
        "adam-eps",
        torch.optim.Adam,
        {"lr": 0.1, "betas": (0.8, 0.99), "eps": 0.1},
        adam,
        {"lr": 0.1, "betas": (0.8, 0.99), "eps": 0.1},
    ),
]


def torch_iterates(problem: Quadratic, opt_cls: type[torch.optim.Optimizer], kwargs: dict) -> list:
    theta = nn.Parameter(torch.tensor(problem.theta0, dtype=torch.float64))
    opt = opt_cls([theta], **kwargs)
    out = []
    for _ in range(STEPS):
        opt.zero_grad()
        problem.loss(theta).backward()
        opt.step()
        out.append(theta.detach().numpy().copy())
    return out


@pytest.mark.parametrize(
    ("opt_cls", "torch_kwargs", "reference", "ref_kwargs"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_optim_follows_the_textbook_equations(
    seed, opt_cls, torch_kwargs, reference, ref_kwargs
):
    """Three steps of torch.optim match our numpy update equations to 1e-10 (float64)."""
    problem = Quadratic(seed=seed)
    ours = reference(problem.theta0.copy(), problem.grad, **ref_kwargs)
    theirs = torch_iterates(problem, opt_cls, torch_kwargs)
    for step, expected in enumerate(theirs, start=1):
        got = next(ours)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10, err_msg=f"step {step}")
    assert not np.allclose(theirs[-1], problem.theta0)  # the optimizer did move


def test_eps_placement_is_detectable():
    """The large-eps cases do discriminate: eps inside the square root gives other iterates."""
    problem = Quadratic(seed=0)
    theirs = torch_iterates(problem, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "eps": 0.1})

    def rmsprop_eps_inside(theta, grad, lr, alpha, eps):
        sq = np.zeros_like(theta)
        while True:
            g = grad(theta)
            sq = alpha * sq + (1 - alpha) * g * g
            theta = theta - lr * g / np.sqrt(sq + eps)
            yield theta

    wrong = rmsprop_eps_inside(problem.theta0.copy(), problem.grad, lr=0.01, alpha=0.9, eps=0.1)
    last = [next(wrong) for _ in range(STEPS)][-1]
    assert np.abs(last - theirs[-1]).max() > 1e-4
