"""A DHSPG-style group-sparse optimizer: S3Editor's structured sparsity (Wang et al.,
2024; docs/s3editor.md).

DHSPG (Dual Half-Space Projected Gradient, OTOv2) drives chosen parameter groups to
exactly zero; S3Editor's change is that each group's lasso weight λ_g is found by a
line search instead of being hand-tuned. This implementation, step t = 1, 2, ...:

0. Gradients of groups already zeroed are masked (set to 0): zero groups stay zero.
1. Base step, unchanged: ``torch.optim.SGD`` (with momentum) or ``torch.optim.Adam``,
   run as a wrapped instance, so with q = 0, and during warm-up for any q, the
   iterates are the base optimizer's bit for bit (same torch code path).
2. At t = warmup_steps + 1 the Q = ⌊q·|G|⌋ groups of smallest RMS magnitude
   ‖x_g‖/√n_g (n_g = entries of the group; ties: lower index) are chosen, once:
   RMS rather than the plain norm so that large groups (the mouth has 20 points) are
   not favoured for keeping merely by their size.
3. Sparsification window (warmup_steps < t ≤ warmup_steps + sparsify_steps), for every
   chosen group g not yet zero, with x_g its value before the step, x_g^b after the
   base step and α its learning rate:
   a. group-lasso push, the decoupled subgradient step of λ_g‖x_g‖:
      x̃_g(λ) = x_g^b − α·λ·x_g/‖x_g‖;
   b. line search for λ_g: λ = λ_0, 2λ_0, 4λ_0, ... (capped at λ_max) until
      ‖x̃_g(λ)‖ ≤ (1 − η)‖x_g‖, i.e. the group shrinks by at least the fraction η
      (``shrink``) this step, or the trial leaves the half-space of (c) (raising λ
      further only pushes it past the origin; it is projected to zero). Every search
      is recorded in ``last_searches`` with the shrink reached after (c);
   c. half-space projection: x_g ← 0 if x̃_g·x_g < ε‖x_g‖² (the trial left the
      half-space around x_g) or ‖x̃_g‖ ≤ τ‖x_g^sel‖ (norm below a tolerance relative to
      the group's norm when chosen), else x_g ← x̃_g.
   A group much larger than the base step shrinks gradually (the doubling cannot jump
   from "shrinks < η" to "past the origin": those λ differ by a factor ≈ (1−ε)/η);
   a group the base step's noise dominates leaves the half-space and is zeroed.
4. At t = warmup_steps + sparsify_steps every chosen group still non-zero is forced to
   zero (a hard projection; counted in ``forced``), so EXACTLY Q groups are zero from
   then on.
5. Zero groups: values and the base optimizer's per-parameter state (momentum buffer,
   Adam moments) at their columns are set to 0 after every step.

``report(loss)`` records an evaluated loss for the current iterate; the best among
iterates with exactly Q zero groups is kept (a parameter snapshot) and
``restore_best()`` writes it back. The training loop calls both through its optimizer
hooks (``s3edit.train.loop.OptimizerHooks``): ``before_step(loss)`` reports each
step's loss, ``after_training()`` restores the best iterate; with Q = 0 neither does
anything, so the run is the base optimizer's. ``state_dict``/``load_state_dict`` carry
the base optimizer's state plus all of the above, for checkpoint/resume.

A group is a set of columns (dim 1) of one 2-D parameter, e.g. the landmark input
columns of a Linear weight ``(out, in)`` (``s3edit.s3.groups``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

BASE_OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True, eq=False)
class Group:
    """Columns ``columns`` (dim 1) of the 2-D parameter ``param``, zeroed together."""

    param: Tensor
    columns: tuple[int, ...]
    name: str = ""


@dataclass(frozen=True)
class DHSPGConfig:
    """Hyper-parameters (defaults are ours unless marked; S3Editor's best q is 0.1).

    base: "adam" or "sgd"; lr/momentum/betas/eps/weight_decay go to that optimizer.
    q: fraction of groups to zero, Q = ⌊q·|G|⌋ (paper: 0.1 best, 0.3/0.5 hurt).
    warmup_steps: plain base steps before the Q groups are chosen.
    sparsify_steps: length of the push/projection window; Q exact at its end.
    lambda0, lambda_max: start and cap of the doubling search for λ_g.
    shrink: η, the fraction a chosen group's norm must lose per window step.
    halfspace_eps: ε of the half-space test x̃_g·x_g < ε‖x_g‖².
    zero_tol: τ, zero a group whose trial norm is ≤ τ × its norm when chosen."""

    base: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    q: float = 0.1
    warmup_steps: int = 100
    sparsify_steps: int = 200
    lambda0: float = 1e-3
    lambda_max: float = 1e6
    shrink: float = 0.1
    halfspace_eps: float = 0.0
    zero_tol: float = 1e-2

    def __post_init__(self) -> None:
        if self.base not in BASE_OPTIMIZERS:
            raise ValueError(f"base must be one of {BASE_OPTIMIZERS}, got {self.base!r}")
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {self.q}")
        if not 0.0 < self.shrink < 1.0:
            raise ValueError(f"shrink must be in (0, 1), got {self.shrink}")
        if self.warmup_steps < 0 or self.sparsify_steps < 0:
            raise ValueError("warmup_steps and sparsify_steps must be >= 0")
        if not 0.0 < self.lambda0 <= self.lambda_max:
            raise ValueError("need 0 < lambda0 <= lambda_max")


@dataclass(frozen=True)
class LambdaSearch:
    """One λ_g line search: group index, λ found, shrink = 1 − ‖x_g^new‖/‖x_g‖ reached
    (1.0 when projected to zero), met = shrink ≥ η (False only when λ_max capped the
    search before the trial shrank enough or left the half-space), zeroed by (c)."""

    group: int
    lam: float
    shrink: float
    met: bool
    zeroed: bool


def num_sparse_groups(q: float, num_groups: int) -> int:
    """Q = ⌊q·|G|⌋ (a 1e-9 guard keeps e.g. 0.3·10 = 3 despite float round-off)."""
    return int(math.floor(q * num_groups + 1e-9))


def _make_base(params: Iterable, c: DHSPGConfig) -> torch.optim.Optimizer:
    """The wrapped base optimizer, built exactly as a user would build it."""
    if c.base == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    return torch.optim.Adam(params, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay)


class DHSPG(torch.optim.Optimizer):
    """Group-sparse optimizer; see the module docstring for the algorithm.

    ``DHSPG(params, groups, config)``: params as for any torch optimizer (tensors or
    param-group dicts; per-group ``lr`` works and LR schedulers work); every group's
    parameter must be among them. Use like the base optimizer (``zero_grad``,
    ``backward``, ``step``), plus ``report(loss)`` after an evaluation and
    ``restore_best()`` at the end, or let a loop call ``before_step``/``after_training``."""

    def __init__(self, params: Iterable, groups: list[Group], config: DHSPGConfig = DHSPGConfig()):
        self.base = _make_base(params, config)
        super().__init__(self.base.param_groups, self.base.defaults)
        self._relink()
        self.config = config
        self.groups = list(groups)
        self._cols = [
            torch.tensor(g.columns, dtype=torch.long, device=g.param.device) for g in self.groups
        ]
        self._check_groups()
        self.num_sparse = num_sparse_groups(config.q, len(self.groups))
        self._step = 0
        self._chosen: list[int] | None = None
        self._zero: list[int] = []
        self._norm0: dict[int, float] = {}
        self.forced = 0
        self.last_searches: list[LambdaSearch] = []
        self._best_loss = math.inf
        self._best_step = -1
        self._best_params: list[Tensor] | None = None

    # --- public state ----------------------------------------------------------------

    @property
    def steps(self) -> int:
        """Completed steps."""
        return self._step

    @property
    def phase(self) -> str:
        """Phase of the next step: "warmup", "sparsify", "sparse" (Q groups zero) or
        "dense" (Q = 0: the base optimizer throughout)."""
        c = self.config
        if self.num_sparse == 0:
            return "dense"
        if self._step < c.warmup_steps:
            return "warmup"
        return "sparsify" if self._step < c.warmup_steps + c.sparsify_steps else "sparse"

    @property
    def chosen_groups(self) -> list[int]:
        """Indices of the Q groups chosen for zeroing ([] before the window)."""
        return list(self._chosen or [])

    def zero_groups(self) -> list[int]:
        """Indices of the groups the optimizer has zeroed (their values are exactly 0)."""
        return sorted(self._zero)

    def num_zero_groups(self) -> int:
        return len(self._zero)

    @property
    def best_loss(self) -> float:
        return self._best_loss

    @property
    def best_step(self) -> int:
        """Step count of the kept iterate (-1 if none yet)."""
        return self._best_step

    # --- the step --------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        c, t = self.config, self._step + 1
        sparse_phase = self.num_sparse > 0 and t > c.warmup_steps
        if sparse_phase and self._chosen is None:
            self._choose()
        in_window = sparse_phase and t <= c.warmup_steps + c.sparsify_steps
        active = [g for g in (self._chosen or []) if g not in self._zero] if in_window else []
        self._mask_grads()
        before = {g: self._values(g) for g in active}  # index_select copies
        self.base.step()
        self.last_searches = [self._push_and_project(g, before[g]) for g in active]
        if sparse_phase and t >= c.warmup_steps + c.sparsify_steps:
            self._force_remaining()
        self._apply_zeros()
        self._step = t
        return loss

    def _choose(self) -> None:
        """Step 2: the Q groups of smallest RMS magnitude (ties: lower index)."""
        rms = [float(self._values(i).float().norm()) / math.sqrt(self._values(i).numel())
               for i in range(len(self.groups))]
        order = sorted(range(len(self.groups)), key=lambda i: (rms[i], i))
        self._chosen = sorted(order[: self.num_sparse])
        self._norm0 = {i: float(self._values(i).float().norm()) for i in self._chosen}

    def _push_and_project(self, g: int, x_old: Tensor) -> LambdaSearch:
        """Step 3: push, λ line search, half-space projection of one chosen group."""
        c = self.config
        n_old = float(x_old.norm())
        if n_old == 0.0:
            self._zero.append(g)
            return LambdaSearch(g, 0.0, 1.0, True, True)
        x_base, u = self._values(g), x_old / n_old
        alpha, target = self._lr(g), (1.0 - c.shrink) * n_old
        lam = c.lambda0
        while True:
            trial = x_base - (alpha * lam) * u
            n_trial = float(trial.norm())
            left = float((trial * x_old).sum()) < c.halfspace_eps * n_old**2
            if n_trial <= target or left or lam >= c.lambda_max:
                break
            lam = min(2.0 * lam, c.lambda_max)
        zeroed = left or n_trial <= c.zero_tol * self._norm0[g]
        if zeroed:
            self._zero.append(g)
            n_trial = 0.0
        else:
            self._set_values(g, trial)
        return LambdaSearch(g, lam, 1.0 - n_trial / n_old, n_trial <= target, zeroed)

    def _force_remaining(self) -> None:
        """Step 4: zero the chosen groups the window did not reach."""
        for g in self._chosen or []:
            if g not in self._zero:
                self._zero.append(g)
                self.forced += 1

    # --- best iterate ----------------------------------------------------------------

    def report(self, loss: float | Tensor) -> bool:
        """Record the evaluated loss of the current iterate; keep it if it has exactly
        Q zero groups and the lowest loss so far. Returns True when kept."""
        value = float(loss)
        if len(self._zero) != self.num_sparse or not value < self._best_loss:
            return False
        self._best_loss, self._best_step = value, self._step
        self._best_params = [p.detach().clone() for p in self._params()]
        return True

    @torch.no_grad()
    def restore_best(self) -> None:
        """Write the kept iterate back into the parameters (parameters only: the base
        optimizer's moments stay as they are)."""
        if self._best_params is None:
            raise RuntimeError(
                "No iterate with exactly Q zero groups has been reported: call "
                "opt.report(loss) after evaluations past the sparsification window first."
            )
        for p, best in zip(self._params(), self._best_params):
            p.copy_(best)

    # --- training-loop hooks (``s3edit.train.loop.OptimizerHooks``) ---------------------

    def before_step(self, loss: float) -> None:
        """``report`` the loss of the current iterate (the step that follows has not been
        taken); nothing with Q = 0, where the run stays the base optimizer's."""
        if self.num_sparse > 0:
            self.report(loss)

    def after_training(self) -> None:
        """``restore_best`` when an iterate with exactly Q zero groups was reported."""
        if self.num_sparse > 0 and self._best_step >= 0:
            self.restore_best()

    # --- checkpoint ------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The base optimizer's state dict plus a ``"dhspg"`` entry with the step count,
        chosen/zero groups, and the kept best iterate."""
        sd = dict(self.base.state_dict())
        sd["dhspg"] = {
            "step": self._step,
            "group_names": [g.name for g in self.groups],
            "chosen": self._chosen,
            "zero": list(self._zero),
            "norm0": dict(self._norm0),
            "forced": self.forced,
            "best_loss": self._best_loss,
            "best_step": self._best_step,
            "best_params": self._best_params,
        }
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        sd = dict(state_dict)
        extra = sd.pop("dhspg")
        if len(extra["group_names"]) != len(self.groups):
            raise ValueError(
                f"checkpoint has {len(extra['group_names'])} sparsity groups, this optimizer "
                f"{len(self.groups)}: build the groups the same way (same K) before resuming"
            )
        self.base.load_state_dict(sd)
        self._relink()
        self._step = int(extra["step"])
        self._chosen = None if extra["chosen"] is None else list(extra["chosen"])
        self._zero = list(extra["zero"])
        self._norm0 = dict(extra["norm0"])
        self.forced = int(extra["forced"])
        self._best_loss, self._best_step = float(extra["best_loss"]), int(extra["best_step"])
        best = extra["best_params"]
        self._best_params = None if best is None else [
            b.to(device=p.device, dtype=p.dtype).clone() for p, b in zip(self._params(), best)
        ]

    # --- helpers ---------------------------------------------------------------------

    def _relink(self) -> None:
        """Share param_groups/state with the base optimizer (LR schedulers edit ours)."""
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def _params(self) -> list[Tensor]:
        return [p for pg in self.param_groups for p in pg["params"]]

    def _check_groups(self) -> None:
        known = {id(p) for p in self._params()}
        seen: set[tuple[int, int]] = set()
        for g in self.groups:
            if id(g.param) not in known:
                raise ValueError(f"group {g.name!r}: its parameter is not among the optimizer's")
            if g.param.dim() != 2 or not g.columns:
                raise ValueError(f"group {g.name!r}: needs a 2-D parameter and >= 1 column")
            if min(g.columns) < 0 or max(g.columns) >= g.param.shape[1]:
                shape = tuple(g.param.shape)
                raise ValueError(f"group {g.name!r}: column out of range for {shape}")
            cells = {(id(g.param), col) for col in g.columns}
            if cells & seen or len(cells) != len(g.columns):
                raise ValueError(f"group {g.name!r}: overlaps another group")
            seen |= cells

    def _lr(self, g: int) -> float:
        param = self.groups[g].param
        for pg in self.param_groups:
            if any(p is param for p in pg["params"]):
                return float(pg["lr"])
        raise RuntimeError("group parameter vanished from the optimizer")

    def _values(self, g: int) -> Tensor:
        """x_g: ``(rows, n_cols)`` copy of the group's columns."""
        return self.groups[g].param.detach().index_select(1, self._cols[g])

    def _set_values(self, g: int, values: Tensor) -> None:
        self.groups[g].param.detach().index_copy_(1, self._cols[g], values)

    def _mask_grads(self) -> None:
        for g in self._zero:
            grad = self.groups[g].param.grad
            if grad is not None:
                grad.index_fill_(1, self._cols[g], 0.0)

    def _apply_zeros(self) -> None:
        for g in self._zero:
            param, cols = self.groups[g].param, self._cols[g]
            param.detach().index_fill_(1, cols, 0.0)
            for value in self.base.state.get(param, {}).values():
                if torch.is_tensor(value) and value.shape == param.shape:
                    value.index_fill_(1, cols, 0.0)
