"""Attributes: their names, DVA's attribute heads and DVA's edit rule (docs/edit.md).

- ``CELEBA_ATTRIBUTES``: the 40 CelebA attributes, spelled and ordered as CelebA's
  list_attr_celeba.txt (Liu et al., 2015); DVA's/DiffAE's classifier rows follow it.
- ``Classifier``: DVA's heads, logits = W · norm(z_id) + b with norm(z) = (z - μ) / σ.
- the edit rule (Kim et al., 2023, Sec. 3.3): z' = l2norm(denorm(norm(z) + s·√D·â)),
  â = W_a / ‖W_a‖; ``edited_identity`` applies it for several (name, scale) pairs.

The classifier, the training terms, S3Editor's self-training and its routing all use
these functions; none keeps its own copy of the normalisation.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from s3edit.errors import InputError

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair",
    "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
assert len(CELEBA_ATTRIBUTES) == 40

DVA_EDIT_SCALE = 0.3  # DVA's default edit strength s
CLASSIFIER_KEYS = ("weight", "bias", "conds_mean", "conds_std")


def normalize(z: Tensor, conds_mean: Tensor, conds_std: Tensor) -> Tensor:
    """norm(z) = (z - μ) / σ with the classifier's buffers ``conds_mean``/``conds_std``
    ``(1, D)``; z ``(B, D)`` -> ``(B, D)``."""
    return (z - conds_mean) / conds_std


def denormalize(z: Tensor, conds_mean: Tensor, conds_std: Tensor) -> Tensor:
    """denorm(z) = z·σ + μ, the inverse of ``normalize``; ``(B, D)`` -> ``(B, D)``."""
    return z * conds_std + conds_mean


def edit_direction(w_row: Tensor) -> Tensor:
    """â = w / ‖w‖ for one classifier row ``(D,)`` (or rows ``(A, D)``, row-wise)."""
    return F.normalize(w_row, dim=-1)


def edit_identity(
    z_id: Tensor,
    direction: Tensor,
    scale: float | Tensor,
    conds_mean: Tensor,
    conds_std: Tensor,
) -> Tensor:
    """DVA's edit rule: z' = l2norm(denorm(norm(z) + s·√D·â)).

    z_id ``(B, D)``; direction â ``(D,)`` or ``(B, D)`` (unit rows, ``edit_direction``);
    scale s a float or ``(B,)``. Returns ``(B, D)`` unit rows. √D makes s a fraction of
    the typical length of a normalised code (each of its D entries has unit variance)."""
    D = z_id.shape[-1]
    s = torch.as_tensor(scale, dtype=z_id.dtype, device=z_id.device).reshape(-1, 1)
    moved = normalize(z_id, conds_mean, conds_std) + s * math.sqrt(D) * direction
    return F.normalize(denormalize(moved, conds_mean, conds_std), dim=-1)


def edit_step(direction: Tensor, conds_std: Tensor) -> Tensor:
    """The unit direction in z_id's own units along which ``edit_identity`` moves a code
    before its final l2norm: s·√D·â in normalised units is s·√D·(â ⊙ std). ``direction``
    ``(D,)`` or ``(A, D)``; conds_std ``(1, D)``."""
    return F.normalize(direction * conds_std, dim=-1)


@dataclass
class Classifier:
    """DVA's attribute heads: logits = Linear(norm(z_id)), norm(z) = (z - mean) / std.

    weight (A, D), bias (A,), conds_mean (1, D), conds_std (1, D); names: A row names."""

    weight: torch.Tensor
    bias: torch.Tensor
    conds_mean: torch.Tensor
    conds_std: torch.Tensor
    names: list[str]

    def normalize(self, z_id: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D) standardised with the training set's statistics."""
        return normalize(z_id, self.conds_mean, self.conds_std)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return denormalize(z, self.conds_mean, self.conds_std)

    def logits(self, z_id: torch.Tensor) -> torch.Tensor:
        """(N, D) identity vectors -> (N, A) attribute logits."""
        return F.linear(self.normalize(z_id), self.weight, self.bias)

    def index(self, name: str) -> int:
        """Row of an attribute; an unknown name raises InputError naming the closest."""
        if name in self.names:
            return self.names.index(name)
        lower = {n.lower(): n for n in self.names}
        if name.lower() in lower:
            return self.names.index(lower[name.lower()])
        close = difflib.get_close_matches(name, self.names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `s3edit weights list` to see the attributes."
        raise InputError(f"unknown attribute {name!r}; {hint}")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in CLASSIFIER_KEYS}

    def to(self, device=None, dtype=None) -> "Classifier":
        moved = {k: v.to(device=device, dtype=dtype) for k, v in self.tensors().items()}
        return Classifier(**moved, names=list(self.names))


def edited_identity(z_id_rep: Tensor, attributes: list[tuple[str, float]],
                    classifier: Classifier) -> Tensor:
    """The edit rule for (name, scale) pairs: (D,) -> (D,) unit vector. Several
    attributes add their steps s_a·â_a in the normalised space before the one l2norm
    (their order does not matter). All scales 0 return ``z_id_rep`` itself."""
    if all(s == 0 for _, s in attributes):
        return z_id_rep
    w = classifier.weight.to(z_id_rep)
    step = sum(s * edit_direction(w[classifier.names.index(n)]) for n, s in attributes)
    z = edit_identity(z_id_rep[None], step[None], 1.0,
                      classifier.conds_mean.to(z_id_rep), classifier.conds_std.to(z_id_rep))
    return z[0]
