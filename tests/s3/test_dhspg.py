"""The DHSPG-style group-sparse optimizer (s3edit.s3.dhspg) on small problems with a
known group structure: some input-feature groups carry no signal."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from s3edit.s3.dhspg import DHSPG, DHSPGConfig, Group, num_sparse_groups

N_GROUPS, WIDTH, OUT = 8, 3, 4  # least squares: 8 feature groups of 3 columns, 4 outputs
IRRELEVANT = [2, 5]  # groups with zero true weight


def least_squares(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(256, N_GROUPS * WIDTH, generator=g)
    W_true = torch.randn(OUT, N_GROUPS * WIDTH, generator=g)
    for i in IRRELEVANT:
        W_true[:, i * WIDTH : (i + 1) * WIDTH] = 0.0
    y = X @ W_true.T + 0.01 * torch.randn(256, OUT, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Linear(N_GROUPS * WIDTH, OUT)
    return model, X, y


def column_groups(weight: torch.Tensor, n: int, width: int) -> list[Group]:
    return [Group(weight, tuple(range(i * width, (i + 1) * width)), f"g{i}") for i in range(n)]


def mse(model, X, y) -> torch.Tensor:
    return F.mse_loss(model(X), y)


def loss_value(model, X, y) -> float:
    with torch.no_grad():
        return float(mse(model, X, y))


def train(model, opt, X, y, steps: int, batch: int | None = None, seed: int = 0, on_step=None):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(len(X), (batch,), generator=g) if batch else slice(None)
        opt.zero_grad()
        mse(model, X[rows], y[rows]).backward()
        opt.step()
        if on_step:
            on_step()


def zero_group_count(groups: list[Group]) -> int:
    return sum(bool((g.param[:, list(g.columns)] == 0).all()) for g in groups)


def test_num_sparse_groups_floor():
    assert num_sparse_groups(0.1, 35) == 3
    assert num_sparse_groups(0.3, 10) == 3
    assert num_sparse_groups(0.0, 35) == 0
    assert num_sparse_groups(0.5, 35) == 17


@pytest.mark.parametrize(
    "config, reference",
    [
        (DHSPGConfig(base="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, q=0.0),
         lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)),
        (DHSPGConfig(base="adam", lr=0.01, betas=(0.8, 0.99), weight_decay=1e-3, q=0.0),
         lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.8, 0.99), weight_decay=1e-3)),
        # q > 0 but still inside the warm-up: the base optimizer too.
        (DHSPGConfig(base="adam", lr=0.01, q=0.5, warmup_steps=1000),
         lambda params: torch.optim.Adam(params, lr=0.01)),
        # q > 0 but Q = ⌊0.1 · 8⌋ = 0 groups to zero: the base optimizer past the warm-up.
        (DHSPGConfig(base="adam", lr=0.01, q=0.1, warmup_steps=5, sparsify_steps=10),
         lambda params: torch.optim.Adam(params, lr=0.01)),
    ],
)
def test_without_sparsity_equals_the_base_optimizer_bit_for_bit(config, reference):
    model, X, y = least_squares()
    twin = copy.deepcopy(model)

    def param_groups(m):  # two param groups with their own lr: passed through as is
        return [{"params": [m.weight]}, {"params": [m.bias], "lr": 0.002}]

    opt = DHSPG(param_groups(model), column_groups(model.weight, N_GROUPS, WIDTH), config)
    ref = reference(param_groups(twin))
    for step in range(40):
        train(model, opt, X, y, 1, batch=32, seed=step)
        train(twin, ref, X, y, 1, batch=32, seed=step)
        assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)


def sparse_run(config: DHSPGConfig, extra_steps: int = 0):
    model, X, y = least_squares()
    groups = column_groups(model.weight, N_GROUPS, WIDTH)
    opt = DHSPG(model.parameters(), groups, config)
    searches = []
    start = loss_value(model, X, y)
    c = config
    train(model, opt, X, y, c.warmup_steps + c.sparsify_steps + extra_steps,
          on_step=lambda: searches.extend(opt.last_searches))
    return model, X, y, groups, opt, searches, start


SGD_SPARSE = DHSPGConfig(base="sgd", lr=0.02, momentum=0.9, q=0.25, warmup_steps=15,
                         sparsify_steps=40, shrink=0.15)


def test_exactly_q_groups_zeroed_and_loss_decreases():
    model, X, y, groups, opt, searches, start = sparse_run(SGD_SPARSE)
    assert opt.num_sparse == 2
    assert opt.chosen_groups == IRRELEVANT  # smallest RMS after warm-up = no signal
    assert opt.zero_groups() == IRRELEVANT and zero_group_count(groups) == 2
    assert opt.forced == 0  # the window reached them by itself
    final = loss_value(model, X, y)
    assert final < 0.05 * start
    assert opt.phase == "sparse"


def test_line_search_meets_its_shrink_condition():
    *_, opt, searches, _ = sparse_run(SGD_SPARSE)
    assert len(searches) > 2
    for s in searches:
        assert s.met and s.shrink >= SGD_SPARSE.shrink - 1e-6, s
        assert SGD_SPARSE.lambda0 <= s.lam <= SGD_SPARSE.lambda_max
    assert {s.group for s in searches if s.zeroed} == set(IRRELEVANT)
    gradual = [s for s in searches if not s.zeroed]
    assert len(gradual) >= 4 and all(0 < s.shrink < 1 for s in gradual)


def test_capped_search_is_recorded_as_not_met():
    config = DHSPGConfig(base="sgd", lr=0.02, q=0.25, warmup_steps=5, sparsify_steps=3,
                         lambda0=1e-3, lambda_max=2e-3, shrink=0.5, zero_tol=1e-6)
    *_, groups, opt, searches, _ = sparse_run(config)
    assert searches and not any(s.met for s in searches)
    assert all(s.lam == 2e-3 and s.shrink < 0.5 for s in searches)
    # The window was too short: the remaining chosen groups were forced, still exactly Q.
    assert opt.forced == 2 and zero_group_count(groups) == 2


def test_zero_groups_stay_zero_in_later_steps():
    model, X, y, groups, opt, _, _ = sparse_run(SGD_SPARSE)
    for step in range(30):  # minibatch steps: their gradients would move the columns
        train(model, opt, X, y, 1, batch=16, seed=100 + step)
        assert zero_group_count(groups) == 2
        assert opt.last_searches == []
    buf = opt.state[model.weight]["momentum_buffer"]
    for i in IRRELEVANT:
        assert bool((buf[:, i * WIDTH : (i + 1) * WIDTH] == 0).all())


def test_logistic_regression_with_adam():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(512, 12, generator=g)
    w_true = 2.0 * torch.randn(12, generator=g)
    w_true[2:4] = 0.0  # group 1
    w_true[8:10] = 0.0  # group 4
    labels = (X @ w_true > 0).float()
    torch.manual_seed(3)
    model = torch.nn.Linear(12, 1)
    groups = column_groups(model.weight, 6, 2)
    config = DHSPGConfig(base="adam", lr=0.05, q=0.34, warmup_steps=60, sparsify_steps=60)
    opt = DHSPG(model.parameters(), groups, config)

    def loss():
        return F.binary_cross_entropy_with_logits(model(X).squeeze(1), labels)

    start = float(loss().detach())
    for _ in range(150):
        opt.zero_grad()
        loss().backward()
        opt.step()
        assert all(s.met and s.shrink >= config.shrink - 1e-6 for s in opt.last_searches)
    assert opt.chosen_groups == [1, 4] and zero_group_count(groups) == 2
    assert float(loss().detach()) < 0.5 * start
    accuracy = float(((model(X).squeeze(1) > 0).float() == labels).float().mean())
    assert accuracy > 0.95


def test_best_iterate_is_kept_among_exactly_q_sparse_ones():
    model, X, y = least_squares()
    groups = column_groups(model.weight, N_GROUPS, WIDTH)
    opt = DHSPG(model.parameters(), groups, SGD_SPARSE)
    kept = []
    for step in range(SGD_SPARSE.warmup_steps + SGD_SPARSE.sparsify_steps + 20):
        train(model, opt, X, y, 1, batch=16, seed=step)
        loss = loss_value(model, X, y)
        if opt.report(loss):
            kept.append((loss, copy.deepcopy(model.state_dict())))
        if opt.num_zero_groups() != 2:
            assert not kept  # nothing dense is ever kept
    assert kept and opt.best_loss == kept[-1][0] == min(k[0] for k in kept)
    with torch.no_grad():
        model.weight.add_(1.0)
    opt.restore_best()
    assert all(torch.equal(v, kept[-1][1][k]) for k, v in model.state_dict().items())
    assert zero_group_count(groups) == 2


def test_restore_best_before_any_report_says_what_to_do():
    model, *_ = least_squares()
    opt = DHSPG(model.parameters(), column_groups(model.weight, N_GROUPS, WIDTH), SGD_SPARSE)
    with pytest.raises(RuntimeError, match=r"call opt.report\(loss\) after evaluations"):
        opt.restore_best()



def test_loop_hooks_report_and_restore_the_best_iterate_only_when_sparse():
    """``before_step``/``after_training`` (the training loop's hooks) are ``report`` of
    the iterate before each step and ``restore_best`` at the end; with Q = 0 they do
    nothing."""
    model, X, y = least_squares()
    twin, _, _ = least_squares()
    opt = DHSPG(model.parameters(), column_groups(model.weight, N_GROUPS, WIDTH), SGD_SPARSE)
    ref = DHSPG(twin.parameters(), column_groups(twin.weight, N_GROUPS, WIDTH), SGD_SPARSE)
    for step in range(SGD_SPARSE.warmup_steps + SGD_SPARSE.sparsify_steps + 20):
        opt.before_step(loss_value(model, X, y))
        ref.report(loss_value(twin, X, y))
        train(model, opt, X, y, 1, batch=16, seed=step)
        train(twin, ref, X, y, 1, batch=16, seed=step)
    assert opt.best_step == ref.best_step >= 0 and opt.best_loss == ref.best_loss
    opt.after_training()
    ref.restore_best()
    assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)

    dense_model, *_ = least_squares()
    dense = DHSPG(dense_model.parameters(), column_groups(dense_model.weight, N_GROUPS, WIDTH),
                  DHSPGConfig(base="sgd", lr=0.1, q=0.0))
    dense.before_step(1.0)
    assert dense.best_step == -1
    weight = dense_model.weight.detach().clone()
    dense.after_training()
    assert torch.equal(dense_model.weight, weight)

# Pause in the warm-up, mid-window and after the window.
@pytest.mark.parametrize("base, pause_at", [("adam", 10), ("sgd", 30), ("adam", 60)])
def test_state_dict_round_trip_resumes_bit_for_bit(base, pause_at):
    config = DHSPGConfig(base=base, lr=0.02, q=0.25, warmup_steps=15, sparsify_steps=40,
                         shrink=0.15)
    model, X, y = least_squares()
    opt = DHSPG(model.parameters(), column_groups(model.weight, N_GROUPS, WIDTH), config)

    def run(m, o, first, last):
        for step in range(first, last):
            train(m, o, X, y, 1, batch=32, seed=step)
            o.report(loss_value(m, X, y))

    run(model, opt, 0, pause_at)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    run(model, opt, pause_at, 75)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed, _, _ = least_squares(seed=1)  # different init: everything comes from the file
    resumed.load_state_dict(saved["model"])
    opt2 = DHSPG(resumed.parameters(), column_groups(resumed.weight, N_GROUPS, WIDTH), config)
    opt2.load_state_dict(saved["opt"])
    run(resumed, opt2, pause_at, 75)

    assert torch.equal(resumed.weight, model.weight) and torch.equal(resumed.bias, model.bias)
    assert opt2.zero_groups() == opt.zero_groups() and opt2.best_loss == opt.best_loss
    assert opt2.best_step == opt.best_step and opt2.steps == 75


def test_load_state_dict_rejects_other_group_count():
    model, *_ = least_squares()
    opt = DHSPG(model.parameters(), column_groups(model.weight, N_GROUPS, WIDTH), SGD_SPARSE)
    other = DHSPG(model.parameters(), column_groups(model.weight, 4, WIDTH), SGD_SPARSE)
    with pytest.raises(ValueError, match="checkpoint has 8 sparsity groups, this optimizer 4"):
        other.load_state_dict(opt.state_dict())


def test_lr_scheduler_drives_the_base_step():
    model, X, y = least_squares()
    opt = DHSPG(model.parameters(), column_groups(model.weight, N_GROUPS, WIDTH),
                DHSPGConfig(base="sgd", lr=0.1, q=0.0))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, opt, X, y, 1)
    sched.step()
    assert opt.base.param_groups[0]["lr"] == pytest.approx(0.05)


def test_bad_groups_are_rejected():
    model, *_ = least_squares()
    stray = torch.nn.Parameter(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="not among the optimizer's"):
        DHSPG(model.parameters(), [Group(stray, (0,), "stray")])
    overlapping = [Group(model.weight, (0, 1)), Group(model.weight, (1, 2))]
    with pytest.raises(ValueError, match="overlaps another group"):
        DHSPG(model.parameters(), overlapping)
