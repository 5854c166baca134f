"""DVA's training objective (Kim et al., CVPR 2023, Eq. 4-5), with the paired-edit and
keep terms that teach an edit from pairs of frames (docs/training.md).

DVA's objective, per step, for a batch of aligned crops x0 (B, 3, S, S) in [-1, 1]:

1. semantics: z_face = fuse(z_id, z_lnd). The identity and landmark encoders are frozen
   (as in DVA), so z_id and z_lnd are computed once for the whole data set
   (``precompute_semantics``); the fusion Linear and the UNet learn.
2. one timestep t ~ U{0..T-1} per frame and two independent noises eps1, eps2:
   x_t^k = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps_k                         (``noisy``)
3. loss = |eps_theta(x_t^1) - eps1| + |eps_theta(x_t^2) - eps2|            (L_simple, L1)
        + face_weight * |m * (x0_hat^1 - x0_hat^2)|                          (L_reg)
   where x0_hat^k = (x_t^k - sqrt(1 - abar_t) eps_theta(x_t^k)) / sqrt(abar_t)
   (``predict_x0``) and m is the face mask: the two predictions must agree on the face
   whatever the noise, which keeps face information out of x_T.

Paired edits (off unless a ``PairTerm`` is given): where the data holds the same face
without and with an attribute (``s3edit.train.pairs``), a third term teaches the decoder
what the attribute's edit draws, whatever the noisy frame shows. For a pair row (src,
tgt) in either direction (add: src lacks it; remove: src has it), a noise eps_p and

    x_p    = sqrt(abar) src + sqrt(1 - abar) eps_p, t_p ~ U{t_min..T-1}, or in a share
             ``PAIR_FROM_TARGET`` of the rows the same from tgt with t_p ~ U{0..T-1}
    z_p    = DVA's edit rule on src's z_id, +gamma (add) or -gamma (remove) along the
             head's direction, gamma ~ U(PAIR_GAMMA): the code an edit makes
    e      = |eps_theta(x_p, t_p, fuse(z_p, z_lnd_src)) - eps*|,
    eps*   = (x_p - sqrt(abar) tgt) / sqrt(1 - abar)       (the noise whose x0_hat is tgt)
    L_pair = mean(e) + mean of e over the changed region (the pixels where src and tgt
             differ, dilated by one pixel: ``changed_region``)

so under the edited code the prediction is the target's x0, from src's noisy frame and
from tgt's own (there eps* = eps_p, at every t: the steps that end a decode included).
This is what DDIM inversion followed by a decode under an edited code asks of the
network. With pairs of several attributes, each attribute gets an equal share of the
pair rows (``PairTerm.pick``): the 102 real Smiling pairs beside 2,210 glasses twins
would otherwise be one row in twenty. The loss is in epsilon space, weighing each t by
how far its prediction moves the DDIM trajectory; t_min = ``PAIR_T_MIN`` keeps eps*
bounded where abar -> 1. There a change of the target's x0 by d moves eps* by
sqrt(abar / (1 - abar)) d, under 0.1 d past t ~ 670: the high-noise steps, where the
code decides a decode's shapes, hardly count, and a faint change (a smile) is asked for
mostly where the noisy frame already shows the source. With ``PairTerm.space = "x0"``
each row's error is multiplied by w(t) (``x0_weight``, below), which makes it the
one-step x0 error below the cap and counts every step of a decode alike. The
region term gives the few pixels an edit changes as much weight as the whole frame.

The target frame is where the network's own reconstruction error lies too: an L1 loss
pulls each pixel by the sign of its error, and where that error (a blurred one-step
prediction at high t, registration noise) is larger than the edit's change, the change
hardly moves the sign. With ``PairTerm.target = "change"`` the rows noised from src ask
instead for the difference the edit makes to the prediction, against the same noisy
frame under the code without the edit:

    eps* = eps_theta(x_p, t_p, fuse(z_0, z_lnd_src)) - sqrt(abar / (1 - abar)) (tgt - src)

(its one-step x0 is the plain prediction plus tgt - src), where z_0 is z_p without the
edit's step (its code noise kept). The error is common to both predictions and cancels,
and the gradient reaches both: it changes how the network answers the move z_0 -> z_p,
the edit's direction, rather than what it draws for codes near z_p (a fixed plain
prediction would let it add the change to both and chase its own target). DVA's loss
keeps the plain prediction on the frame. The rows noised from tgt keep eps* = eps_p.
It costs one more row through the network for each of those rows.

The error's form (``PairTerm.loss``): ``"l1"`` takes |.| as above; ``"l2"`` squares it
(after the x0 weight w(t), so that in x0 space it is the squared one-step error). Where
the pairs' changes differ from one sitter to the next (real smiles: teeth shown or not,
corners lifted by one pixel or two), the code cannot tell which change a face is asked
for, and the best answer to an L1 error is the per-pixel median of the changes, to an L2
error their mean: for a change present in some pairs only, the median is near zero and
its gradient is a vote of signs that nearly cancels, where the mean keeps a steady pull
towards what the changes share. The squared error of a change of a few per cent is
about ten times smaller than its absolute error, so an L2 term wants about ten times
the weight to pull as hard.

The edited code, not the target's own z_id, conditions the term: a twin's z_id lies
too close to its face's for the network to tell them apart, which is also why the frames
past ``PairTerm.plain_frames`` (the twins, when they are not training inputs) take no
part in DVA's loss.

Keeping the rest (weight ``PairTerm.keep``): for every plain row of DVA's loss (x_t^1,
t, eps1 above), the same frame under its own z_id edited along an attribute's direction
(±gamma, as for the pairs) must still predict eps1 outside the region that attribute's
edit may change (``keep_region``: the attribute's region of
``s3edit.face.mask.ATTRIBUTE_REGIONS``):

    L_keep = mean outside the region of |eps_theta(x_t^1, t, fuse(z_e, z_lnd)) - eps1|

With ``PairTerm.keep_target = "unedited"`` it compares instead the one-step x0
predictions under the edited and the plain code, the latter held fixed:

    L_keep = mean outside of w(t) |eps_theta(x_t^1, t, fuse(z_e, z_lnd)) - sg(eps_theta(x_t^1, t, z_face))|
    w(t)   = min(sqrt((1 - abar_t) / abar_t), X0_CAP) / (its mean over t)

(∝ |x0_hat(z_e) - sg(x0_hat(z_face))| below the cap). The noise form weighs an x0
change at t by sqrt(abar_t / (1 - abar_t)), under 0.01 at t = 999, and so hardly sees the
high-noise steps that set a decode's colours; the x0 form weighs every step of a decode
alike. The plain prediction is DVA's own first row, so it costs no extra forward.

Keeping off the attributes' directions (share ``PairTerm.keep_random`` of L_keep's rows,
0: none): such a row's code moves by ±gamma along a random unit direction orthogonal to
every paired attribute's, and the row is kept over the whole frame (its region is
empty). Without it the only codes that move in training are the pair and keep rows',
all along the paired directions, so the decoder may learn "a code off the face's own
draws the attribute" rather than the attribute's own direction, and draw it under any
other edit (another head's direction). With no paired attribute that has a region,
every L_keep row is such a row.

Code noise: the normalised z_id of L_pair's and L_keep's rows gets Gaussian noise of
std ``PairTerm.code_noise`` before the edit, so the edit's effect is learnt as a
function of the direction, not of the exact codes of the training faces (the
conditioning augmentation of cascaded diffusion models).

Fusion gain (``PairTerm.gain``, 1: none): before the first step ``raise_fusion_gain``
multiplies the fusion layer's response to the paired attributes' edit steps, so that an
edit the decoder has not learnt yet moves z_face as far as a change of sitter does and
the UNet has a move of its code to learn the edit on.

``train_dva`` trains a DVA with this objective on the generic loop
(``s3edit.train.loop``). What the pair and keep terms did to the default weight set:
``weights/default/TRAINING.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3edit.face.mask import ATTRIBUTE_REGIONS, attribute_region, face_mask
from s3edit.model.attributes import denormalize, edit_identity, edit_step, normalize
from s3edit.model.ddim import NUM_TRAIN_TIMESTEPS, decode_scheduler
from s3edit.model.dva import DVA
from s3edit.train.data import CropData
from s3edit.train.loop import Objective, TrainConfig, TrainResult, make_accelerator, train

ENCODER_FROZEN = ("encoder.idnet.", "encoder.lndnet.", "encoder.bgnet.")

PAIR_T_MIN = 100  # L_pair's timesteps t_p >= 100: eps* grows as sqrt(abar / (1 - abar))
PAIR_GAMMA = (0.25, 1.0)  # edit-rule strengths of L_pair's codes (DVA's default s is 0.3)
PAIR_FROM_TARGET = 0.5  # share of L_pair rows noised from the target frame (any t)
PAIR_CODE_NOISE = 0.3  # default std of the noise added to L_pair's and L_keep's normalised codes
PAIR_CHANGED = 2.0 / 255 * 2  # |src - tgt| above 2 grey levels (in [-1, 1] units) is "changed"
KEEP_TARGETS = ("noise", "unedited")  # L_keep against eps1, or x0-space against the plain code's prediction
PAIR_SPACES = ("noise", "x0")  # L_pair in noise space, or weighted to the one-step x0 error
PAIR_TARGETS = ("frame", "change")  # L_pair's x0 target: tgt, or the plain prediction + (tgt - src)
PAIR_LOSSES = ("l1", "l2")  # L_pair's error: absolute (the pairs' per-pixel median) or squared (their mean)
X0_CAP = 20.0  # cap of the x0 factor sqrt((1 - abar) / abar) (reached at t ~ 770)


# --- DVA's semantics and terms ----------------------------------------------------------------


@dataclass
class Semantics:
    """Frozen per-frame encoder outputs: z_id (N, id_dim), z_lnd (N, 102), mask (N, 1, S, S),
    and the crop landmarks in [0, 1] lnd01 (N, 68, 2) (the dlib identity net cuts its chip
    by them)."""

    z_id: Tensor
    z_lnd: Tensor
    mask: Tensor
    lnd01: Tensor

    def per_frame(self, data: CropData) -> dict[str, Tensor]:
        """What a batch reads per frame, by name (the loop's ``frames``)."""
        return {"x0": data.crops, "z_id": self.z_id, "z_lnd": self.z_lnd, "mask": self.mask, "lnd01": self.lnd01}


def freeze_encoders(model: DVA) -> None:
    """The identity/landmark/parser nets never learn (DVA); ``requires_grad`` off also
    keeps DDP from waiting for their gradients."""
    for name, p in model.named_parameters():
        if name.startswith(ENCODER_FROZEN):
            p.requires_grad_(False)


def trainable_parameters(model: DVA) -> list[nn.Parameter]:
    """UNet + fusion; the frozen encoders stay as they are."""
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(ENCODER_FROZEN)]


@torch.no_grad()
def precompute_semantics(model: DVA, data: CropData, batch_size: int = 64,
                         device: torch.device | str | None = None) -> Semantics:
    """z_id, z_lnd and the face mask of every crop, on ``device`` (default: the model's),
    returned on the CPU."""
    device = device or next(model.parameters()).device
    external = model.encoder.lndnet is None
    lnd01 = (data.landmarks + 0.5) / data.size  # pixel-centre crop px -> [0, 1]
    z_id, z_lnd, masks = [], [], []
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)))
        x = data.frames(index).to(device)
        lnd = data.landmarks[index]
        z_id.append(model.z_id(x, lnd01[index].to(device)).float().cpu())
        z_lnd.append(model.z_lnd(x, lnd01[index].to(device) if external else None).float().cpu())
        if model.has_face_parser:
            masks.append(model.face_mask(x).float().cpu())
        else:
            masks.append(torch.from_numpy(face_mask(lnd.numpy(), data.size))[:, None].float())
    return Semantics(torch.cat(z_id), torch.cat(z_lnd), torch.cat(masks), lnd01.float())


def noisy(x0: Tensor, eps: Tensor, a: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; a = abar_t as (B, 1, 1, 1)."""
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def predict_x0(x_t: Tensor, eps_pred: Tensor, a: Tensor) -> Tensor:
    """One-step x0_hat = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)."""
    return (x_t - (1 - a).sqrt() * eps_pred) / a.sqrt()


def dva_terms(pred1, pred2, x_t1, x_t2, eps1, eps2, mask, a) -> dict[str, Tensor]:
    """DVA's L_simple and L_reg from the two predictions (module docstring)."""
    simple = F.l1_loss(pred1, eps1) + F.l1_loss(pred2, eps2)
    reg = (mask * (predict_x0(x_t1, pred1, a) - predict_x0(x_t2, pred2, a))).abs().mean()
    return {"simple": simple, "reg": reg}


def alphas_cumprod() -> Tensor:
    """DVA's schedule abar_t, (T,) float32 (from diffusers' scheduler)."""
    return decode_scheduler(1).alphas_cumprod.float()


# --- the paired-edit and keep terms -------------------------------------------------------------


def keep_region(name: str, lnd01: Tensor, size: int) -> Tensor | None:
    """(B, 1, S, S) float: where attribute ``name``'s edit may change a crop (crop
    landmarks ``lnd01`` in [0, 1]); None for attributes without a known region."""
    region = attribute_region(name, lnd01 * size - 0.5, size)
    return None if region is None else region[:, None].float()


def x0_weight(abar: Tensor, t: Tensor) -> Tensor:
    """The factor w(t) at timesteps ``t`` of L_keep with ``keep_target="unedited"`` and of
    L_pair with ``space="x0"``:
    min(sqrt((1 - abar_t) / abar_t), X0_CAP) over its mean on all T timesteps, so
    the term's gradients are, on average over t, as large as the noise form's (an L1 term
    pushes every pixel with its weight, however small the gap, so the raw factor would
    let the high-noise rows outweigh every other term)."""
    factor = ((1 - abar) / abar).sqrt().clamp(max=X0_CAP)
    return factor[t] / factor.mean()


def keep_loss(pred: Tensor, eps: Tensor, region: Tensor) -> Tensor:
    """L_keep: mean |pred - eps| over the pixels outside ``region`` (B, 1, S, S)."""
    outside = (1 - region).expand_as(pred)
    return ((pred - eps).abs() * outside).sum() / outside.sum().clamp(min=1.0)


def changed_region(src: Tensor, tgt: Tensor) -> Tensor:
    """(B, 3, S, S) twice -> (B, 1, S, S) float: where the pair differs, dilated 1 px."""
    changed = ((src - tgt).abs().amax(1, keepdim=True) > PAIR_CHANGED).float()
    return F.max_pool2d(changed, 3, stride=1, padding=1)


@dataclass
class PairTerm:
    """Paired-edit supervision (module docstring): rows (M, 2) int64 (without, with)
    of the training data; attribute (M,) int64 into ``directions`` (A, D), the unit
    edit directions of the attributes ``names``; ``conds_mean``/``conds_std`` (1, D),
    the classifier's normalisation (DVA's edit rule); ``batch`` pair rows per step
    (0: half the batch size); ``plain_frames``: DVA's loss draws its frames from the
    first ``plain_frames`` rows of the data only (None: all rows); ``keep``: weight of
    L_keep (0: off); ``code_noise``: std of the code noise; ``keep_target``: one of
    ``KEEP_TARGETS``; ``keep_random``: the share of L_keep's rows moved along random
    directions off the paired ones, kept over the whole frame; ``space``: one of
    ``PAIR_SPACES``, L_pair's error in noise space or weighted by w(t); ``target``: one
    of ``PAIR_TARGETS``, the target frame or the plain code's prediction moved by the
    pair's change; ``gain``: the factor ``raise_fusion_gain`` applies before the first
    step (1: none); ``loss``: one of ``PAIR_LOSSES``, L_pair's error absolute or
    squared."""

    rows: Tensor
    attribute: Tensor
    directions: Tensor
    conds_mean: Tensor
    conds_std: Tensor
    names: tuple[str, ...]
    weight: float = 1.0
    batch: int = 0
    sources: tuple[str, ...] = ()  # the pairs files, for the record
    plain_frames: int | None = None
    keep: float = 1.0
    code_noise: float = PAIR_CODE_NOISE
    keep_target: str = "noise"
    keep_random: float = 0.0
    space: str = "noise"
    target: str = "frame"
    gain: float = 1.0
    loss: str = "l1"

    def __post_init__(self):
        if self.keep_target not in KEEP_TARGETS:
            raise ValueError(f"keep_target must be one of {KEEP_TARGETS}, not {self.keep_target!r}")
        if not 0.0 <= self.keep_random <= 1.0:
            raise ValueError(f"keep_random is a share of rows, between 0 and 1, not {self.keep_random}")
        if self.space not in PAIR_SPACES:
            raise ValueError(f"space must be one of {PAIR_SPACES}, not {self.space!r}")
        if self.target not in PAIR_TARGETS:
            raise ValueError(f"target must be one of {PAIR_TARGETS}, not {self.target!r}")
        if not self.gain > 0:
            raise ValueError(f"gain must be positive, not {self.gain}")
        if self.loss not in PAIR_LOSSES:
            raise ValueError(f"loss must be one of {PAIR_LOSSES}, not {self.loss!r}")

    @property
    def keep_attributes(self) -> list[int]:
        """The attributes L_keep edits: those with a known region (``keep_region``)."""
        return [i for i, n in enumerate(self.names) if n in ATTRIBUTE_REGIONS] if self.keep > 0 else []

    @property
    def keeps(self) -> bool:
        """Whether L_keep has rows: an attribute with a region, or random directions."""
        return self.keep > 0 and (bool(self.keep_attributes) or self.keep_random > 0)

    @property
    def random_share(self) -> float:
        """The share of L_keep's rows moved along random directions (all of them when no
        paired attribute has a region)."""
        return self.keep_random if self.keep_attributes else 1.0

    def pick(self, gen: torch.Generator, n: int) -> Tensor:
        """``n`` pair rows drawn with replacement, each attribute an equal share in
        expectation (an attribute with 100 pairs beside one with 2,000 would otherwise
        get one row in twenty); with one attribute, uniform over the rows."""
        counts = torch.bincount(self.attribute, minlength=len(self.names))
        if (counts > 0).sum() < 2:
            return torch.randint(self.rows.shape[0], (n,), generator=gen)
        present = torch.nonzero(counts).flatten()
        attr = present[torch.randint(len(present), (n,), generator=gen)]
        order = torch.argsort(self.attribute, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        within = (torch.rand(n, generator=gen) * counts[attr]).long().clamp(max=counts[attr] - 1)
        return order[starts[attr] + within]

    def rows_per_step(self, batch_size: int) -> int:
        return self.batch or max(1, batch_size // 2)

    def describe(self) -> dict[str, Any]:
        return {"names": list(self.names), "pairs": int(self.rows.shape[0]), "weight": self.weight,
                **({"balanced": True} if len(self.attribute.unique()) > 1 else {}),
                "batch": self.batch, "sources": list(self.sources), "t_min": PAIR_T_MIN,
                "gamma": list(PAIR_GAMMA), "from_target": PAIR_FROM_TARGET, "plain_frames": self.plain_frames,
                "code_noise": self.code_noise, "keep": self.keep,
                "keep_regions": {self.names[i]: ATTRIBUTE_REGIONS[self.names[i]].describe() for i in self.keep_attributes},
                **({"keep_target": self.keep_target, "keep_x0_cap": X0_CAP}
                   if self.keep_target != "noise" else {}),
                **({"keep_random": self.keep_random} if self.keep_random > 0 else {}),
                **({"space": self.space, "x0_cap": X0_CAP} if self.space != "noise" else {}),
                **({"target": self.target} if self.target != "frame" else {}),
                **({"gain": self.gain} if self.gain != 1 else {}),
                **({"loss": self.loss} if self.loss != "l1" else {})}


@torch.no_grad()
def raise_fusion_gain(model: DVA, pairs: PairTerm) -> None:
    """Multiply the fusion layer's response to the paired attributes' edit steps by
    ``pairs.gain``, in place (docs/training.md, *Fusion gain*).

    z_face = W_id z_id + W_lnd z_lnd + b. With P the orthogonal projector onto the span
    of the edits' steps in z_id (``edit_step``),

        W_id <- W_id (I + (g - 1) P),   b <- b - (g - 1) W_id P mu

    so a move of z_id inside that span moves z_face g times as far, a move orthogonal to
    it as before, and the classifier's mean code mu keeps its z_face. For an edit whose
    step the layer damps (one the decoder has not learnt), which moves z_face less than
    a change of sitter does."""
    if pairs.gain == 1:
        return
    linear = model.encoder.linear
    D = pairs.directions.shape[1]
    device = linear.weight.device
    steps = edit_step(pairs.directions, pairs.conds_std).to(device, torch.float64)
    q, _ = torch.linalg.qr(steps.T)  # (D, A): an orthonormal basis of the steps' span
    w_id = linear.weight[:, :D].double()
    moved = (pairs.gain - 1) * (w_id @ q) @ q.T  # (g - 1) W_id P
    linear.bias -= (moved @ pairs.conds_mean.flatten().to(device, torch.float64)).to(linear.bias.dtype)
    linear.weight[:, :D] += moved.to(linear.weight.dtype)


def off_directions(gen: torch.Generator, n: int, directions: Tensor) -> Tensor:
    """(n, D) random unit rows orthogonal to every row of ``directions`` (A, D): Gaussian
    draws with their component in the directions' span removed (an orthonormal basis of
    it from a QR decomposition), then normalised."""
    basis, _ = torch.linalg.qr(directions.double().T)  # (D, A), orthonormal columns
    v = torch.randn((n, directions.shape[1]), generator=gen, dtype=torch.float64)
    v = v - (v @ basis) @ basis.T
    return F.normalize(v, dim=1).float()


# --- the objective ------------------------------------------------------------------------------


class DVAObjective(Objective):
    """DVA's objective as a module (what DDP wraps): ``forward(batch) -> {"loss",
    "simple", "reg"}`` (+ ``"pair"`` and ``"keep"`` with a ``PairTerm``). ``batch`` holds
    x0, z_id, z_lnd, mask, lnd01 and ``draw``'s t, eps1, eps2 (+ the pair and keep rows'
    draws and, under the prefixes ``src_``/``tgt_``/``noisy_``, their frames' tensors:
    ``index_keys``)."""

    name = "dva"

    def __init__(self, model: DVA, face_weight: float = 1.0, pairs: PairTerm | None = None):
        super().__init__()
        self.model = model
        self.face_weight = face_weight
        self.pairs = pairs
        self.register_buffer("abar", alphas_cumprod(), persistent=False)
        if pairs is not None:
            self.register_buffer("pair_directions", pairs.directions.float(), persistent=False)
            self.register_buffer("pair_mean", pairs.conds_mean.float(), persistent=False)
            self.register_buffer("pair_std", pairs.conds_std.float(), persistent=False)

    @property
    def index_keys(self) -> dict[str, str]:
        """Draws that index frames -> the prefix their frames' tensors get in a batch."""
        if self.pairs is None:
            return {"index": ""}
        return {"index": "", "pair_src": "src_", "pair_tgt": "tgt_", "pair_noisy": "noisy_"}

    def split_rows(self, batch_size: int) -> list[int]:
        """The plain rows, and the pair rows (each split over the processes)."""
        if self.pairs is None:
            return [batch_size]
        return [batch_size, self.pairs.rows_per_step(batch_size)]

    def draw(self, gen: torch.Generator, batch: int, num_frames: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        """The random numbers of one global batch (CPU): frame index, t, eps1, eps2
        (+ with pairs: the pair rows, their direction, t_p, eps_p, gamma, code noise;
        + the keep rows' attribute, sign, gamma and code noise)."""
        if self.pairs is not None and self.pairs.plain_frames is not None:
            num_frames = self.pairs.plain_frames
        out = {
            "index": torch.randint(num_frames, (batch,), generator=gen),
            "t": torch.randint(NUM_TRAIN_TIMESTEPS, (batch,), generator=gen),
            "eps1": torch.randn((batch, *shape), generator=gen),
            "eps2": torch.randn((batch, *shape), generator=gen),
        }
        if self.pairs is not None:
            p = self.pairs.rows_per_step(batch)
            pick = self.pairs.pick(gen, p)
            add = torch.rand(p, generator=gen) < 0.5
            rows = self.pairs.rows[pick]
            lo, hi = PAIR_GAMMA
            out |= {
                "pair_src": torch.where(add, rows[:, 0], rows[:, 1]),
                "pair_tgt": torch.where(add, rows[:, 1], rows[:, 0]),
                "pair_sign": add.float() * 2 - 1,
                "pair_attr": self.pairs.attribute[pick],
                "pair_t": torch.randint(PAIR_T_MIN, NUM_TRAIN_TIMESTEPS, (p,), generator=gen),
                "pair_eps": torch.randn((p, *shape), generator=gen),
                "pair_gamma": lo + (hi - lo) * torch.rand(p, generator=gen),
            }
            from_target = torch.rand(p, generator=gen) < PAIR_FROM_TARGET
            any_t = torch.randint(NUM_TRAIN_TIMESTEPS, (p,), generator=gen)
            out["pair_t"] = torch.where(from_target, any_t, out["pair_t"])
            out["pair_noisy"] = torch.where(from_target, out["pair_tgt"], out["pair_src"])
            dim = self.pairs.directions.shape[1]
            out["pair_code_noise"] = self.pairs.code_noise * torch.randn((p, dim), generator=gen)
            if self.pairs.keeps:
                kept = self.pairs.keep_attributes or [0]  # [0]: a placeholder, every row is random
                out |= {
                    "keep_attr": torch.tensor(kept)[torch.randint(len(kept), (batch,), generator=gen)],
                    "keep_sign": (torch.rand(batch, generator=gen) < 0.5).float() * 2 - 1,
                    "keep_gamma": lo + (hi - lo) * torch.rand(batch, generator=gen),
                    "keep_code_noise": self.pairs.code_noise * torch.randn((batch, dim), generator=gen),
                }
                if self.pairs.keep_random > 0:  # drawn only then: runs without it draw as before
                    out["keep_random"] = torch.rand(batch, generator=gen) < self.pairs.random_share
                    out["keep_direction"] = off_directions(gen, batch, self.pairs.directions)
        return out

    def edited_code(self, z_id: Tensor, direction: Tensor, scale: Tensor, noise: Tensor | None) -> Tensor:
        """DVA's edit rule on ``z_id`` along the unit rows ``direction`` by ``scale``, after
        adding ``noise`` to the normalised code (module docstring)."""
        if noise is not None:
            z_id = denormalize(normalize(z_id, self.pair_mean, self.pair_std) + noise, self.pair_mean, self.pair_std)
        return edit_identity(z_id, direction, scale, self.pair_mean, self.pair_std)

    def pair_code(self, batch: dict[str, Tensor], edited: bool = True) -> Tensor:
        """z_p of the pair rows (module docstring): the edit rule on src's z_id (with
        ``edited=False`` the same code, code noise included, without the edit's step)."""
        scale = batch["pair_sign"] * batch["pair_gamma"]
        return self.edited_code(batch["src_z_id"], self.pair_directions[batch["pair_attr"]],
                                scale if edited else torch.zeros_like(scale), batch.get("pair_code_noise"))

    def change_rows(self, batch: dict[str, Tensor]) -> Tensor:
        """The pair rows that ``PairTerm.target = "change"`` asks for a change (those
        noised from src) as indices, and none under ``"frame"``."""
        if self.pairs.target != "change":
            return torch.zeros(0, dtype=torch.int64, device=batch["t"].device)
        return torch.nonzero(batch["pair_noisy"] == batch["pair_src"]).flatten()

    def plain_pair_code(self, batch: dict[str, Tensor], rows: Tensor) -> Tensor:
        """z_0 of the pair rows ``rows``: their z_p without the edit's step, code noise kept."""
        keys = ("src_z_id", "pair_attr", "pair_sign", "pair_gamma", "pair_code_noise")
        return self.pair_code({k: batch[k][rows] for k in keys if k in batch}, edited=False)

    def keep_direction(self, batch: dict[str, Tensor]) -> Tensor:
        """The unit direction each L_keep row's code moves along: its attribute's or, in
        the random rows, its own random one (module docstring)."""
        direction = self.pair_directions[batch["keep_attr"]]
        if "keep_random" in batch:
            direction = torch.where(batch["keep_random"][:, None], batch["keep_direction"], direction)
        return direction

    def keep_code(self, batch: dict[str, Tensor]) -> Tensor:
        """The codes of L_keep's rows: the plain rows' z_id edited along ``keep_direction``."""
        return self.edited_code(batch["z_id"], self.keep_direction(batch), batch["keep_sign"] * batch["keep_gamma"],
                                batch["keep_code_noise"])

    def edited_face(self, z_id: Tensor, z_lnd: Tensor, direction: Tensor) -> Tensor:
        """z_face of identity codes edited along the unit rows ``direction`` (the pair and
        keep rows): DVA's fusion. S3Editor's objective adds its routed transforms here,
        so that the terms teach the edit the way ``edit`` applies it."""
        return self.model.fuse(z_id, z_lnd)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        xs, ts, zs = self.rows(batch)
        pred = self.model(torch.cat(xs), torch.cat(ts), torch.cat(zs)).float()  # one forward (DDP); fp32 losses
        return self.terms(batch, xs, pred)

    def rows(self, batch: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The network's inputs for one batch, as lists of (x_t, t, z_face) blocks: DVA's
        two plain blocks, then (with pairs) the pair rows, their plain twins under
        ``target = "change"`` and the keep rows. ``terms`` reads the predictions in
        this order."""
        z_face = self.model.fuse(batch["z_id"], batch["z_lnd"])
        t = batch["t"]
        a = self.abar[t].view(-1, 1, 1, 1)
        x_t1, x_t2 = noisy(batch["x0"], batch["eps1"], a), noisy(batch["x0"], batch["eps2"], a)
        xs, ts, zs = [x_t1, x_t2], [t, t], [z_face, z_face]
        if self.pairs is not None:
            a_p = self.abar[batch["pair_t"]].view(-1, 1, 1, 1)
            x_p = noisy(batch["noisy_x0"], batch["pair_eps"], a_p)
            xs.append(x_p)
            ts.append(batch["pair_t"])
            zs.append(self.edited_face(self.pair_code(batch), batch["src_z_lnd"],
                                       self.pair_directions[batch["pair_attr"]]))
            change = self.change_rows(batch)
            if len(change):  # their plain twins
                xs.append(x_p[change])
                ts.append(batch["pair_t"][change])
                zs.append(self.model.fuse(self.plain_pair_code(batch, change), batch["src_z_lnd"][change]))
        if "keep_attr" in batch:
            xs.append(x_t1)
            ts.append(t)
            zs.append(self.edited_face(self.keep_code(batch), batch["z_lnd"], self.keep_direction(batch)))
        return xs, ts, zs

    def terms(self, batch: dict[str, Tensor], xs: list[Tensor], pred: Tensor) -> dict[str, Tensor]:
        """The loss and its parts from ``pred``, the network's output (fp32) for exactly
        the blocks ``xs`` of ``rows``."""
        t = batch["t"]
        a = self.abar[t].view(-1, 1, 1, 1)
        x_t1, x_t2 = xs[0], xs[1]
        b = x_t1.shape[0]
        parts = dva_terms(pred[:b], pred[b:2 * b], x_t1, x_t2, batch["eps1"], batch["eps2"], batch["mask"], a)
        loss = parts["simple"] + self.face_weight * parts["reg"]
        if self.pairs is not None:
            a_p, x_p = self.abar[batch["pair_t"]].view(-1, 1, 1, 1), xs[2]
            change = self.change_rows(batch)
            target = (x_p - a_p.sqrt() * batch["tgt_x0"]) / (1 - a_p).sqrt()
            p, c = x_p.shape[0], len(change)
            if c:  # the plain twin's prediction moved by the pair's change (module docstring)
                moved = pred[2 * b + p:2 * b + p + c] - (a_p[change] / (1 - a_p[change])).sqrt() * (
                    batch["tgt_x0"][change] - batch["src_x0"][change])
                target = target.index_copy(0, change, moved)
            error = pred[2 * b:2 * b + p] - target
            if self.pairs.space == "x0":
                error = error * x0_weight(self.abar, batch["pair_t"]).view(-1, 1, 1, 1)
            error = error.abs() if self.pairs.loss == "l1" else error.square()
            region = changed_region(batch["src_x0"], batch["tgt_x0"]).expand_as(error)
            parts["pair"] = error.mean() + (error * region).sum() / region.sum().clamp(min=1.0)
            loss = loss + self.pairs.weight * parts["pair"]
        if "keep_attr" in batch:
            if self.pairs.keep_target == "unedited":
                weight = x0_weight(self.abar, t).view(-1, 1, 1, 1)
                parts["keep"] = keep_loss(weight * pred[-b:], weight * pred[:b].detach(), self.keep_regions(batch))
            else:
                parts["keep"] = keep_loss(pred[-b:], batch["eps1"], self.keep_regions(batch))
            loss = loss + self.pairs.keep * parts["keep"]
        return {"loss": loss, **parts}

    def keep_regions(self, batch: dict[str, Tensor]) -> Tensor:
        """(b, 1, S, S): where each L_keep row's edit may change its frame (nowhere for
        the random rows)."""
        size = batch["x0"].shape[-1]
        regions = torch.zeros_like(batch["x0"][:, :1])
        along = ~batch["keep_random"] if "keep_random" in batch else torch.ones_like(batch["keep_attr"], dtype=torch.bool)
        for i in batch["keep_attr"][along].unique().tolist():
            rows = (batch["keep_attr"] == i) & along
            regions[rows] = keep_region(self.pairs.names[i], batch["lnd01"][rows], size)
        return regions

    def describe(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed."""
        if self.pairs is None:
            return {"objective": self.name}
        return {"objective": self.name, "pairs": self.pairs.describe()}


def train_dva(
    model: DVA,
    data: CropData,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    accelerator=None,
    pairs: PairTerm | None = None,
    keep_other: bool = False,
) -> TrainResult:
    """Train ``model`` in place with DVA's objective (AdamW; with ``pairs``, plus the
    paired-edit and keep terms); returns the EMA copy. ``keep_other``: as in ``train``."""
    acc = accelerator or make_accelerator()
    freeze_encoders(model)
    model.to(acc.device)
    sem = precompute_semantics(model, data, device=acc.device)
    if pairs is not None:
        raise_fusion_gain(model, pairs)  # a resumed run's checkpoint replaces these weights
    objective = DVAObjective(model, cfg.face_weight, pairs).to(acc.device)
    opt = torch.optim.AdamW(trainable_parameters(model), lr=cfg.lr, weight_decay=0.0)
    return train(objective, sem.per_frame(data), cfg, checkpoint_dir, opt, accelerator=acc, on_step=on_step,
                 keep_other=keep_other)
