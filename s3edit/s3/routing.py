"""Semantic-disentangled routing of S3Editor (docs/s3editor.md) over DVA's edit rule
(``s3edit.model.attributes``).

Pieces, in the order an edit uses them:

1. ``attribute_embeddings(W)``: a_j = W_j / ‖W_j‖, the normalised rows of DVA's
   ``Linear(D, 40)`` attribute classifier, ``(A, D)``.
2. ``cluster_attributes``: K-means (scipy ``kmeans2``, k-means++ init, seeded) over the
   a_j; every cluster non-empty, clusters numbered in a canonical order.
3. ``AttributeClusters.route``: a known attribute goes to its own cluster, an unseen /
   user-defined one to the nearest centroid by cosine.
4. ``edit_identity`` (``s3edit.model.attributes``): DVA's edit rule
   z' = l2norm(denorm(norm(z) + s·√D·â)).
5. ``ClusterTransforms`` + ``face_code``: z_face' = fuse(z_id', z_lnd) + T_k(cat(z_id', z_lnd)),
   T_k a zero-initialised residual, so an untuned model edits exactly like plain DVA.
6. ``pseudo_edit``: the self-training draw x̂ = T_k(denorm(norm(x) + γ·a)) (S3Editor's
   pseudo-edit, Wang et al., 2024), returning the cluster used.

Shapes: identity codes ``(B, D)`` (D = id_dim: 512 for ArcFace IR-SE50), landmark codes
``(B, 102)`` (51 inner points × (x, y), see ``s3edit.s3.groups``), face codes
``(B, F)`` (F = face_dim = 512).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2
from torch import Tensor, nn

from s3edit.errors import S3EditError
from s3edit.model.attributes import edit_direction, edit_identity

DEFAULT_CLUSTERS = 5  # K of S3Editor's routing, the paper's default (docs/s3editor.md)
KMEANS_ITERS = 50  # Lloyd iterations after k-means++ seeding; 40 points converge in far fewer
# An embedding is "a known attribute" when its cosine with that attribute's embedding
# reaches this; float32 round-off of a unit vector stays well inside 1e-6.
KNOWN_COSINE = 1.0 - 1e-6
DEFAULT_HIDDEN = 256  # width of T_k's hidden layer (our choice; see ClusterTransforms)

FuseFn = Callable[[Tensor, Tensor], Tensor]  # fuse(z_id (B, D), z_lnd (B, 102)) -> (B, F)


def attribute_embeddings(classifier_weight: Tensor) -> Tensor:
    """a_j of S3Editor: the normalised classifier rows, ``(A, D)`` -> ``(A, D)`` unit rows."""
    return edit_direction(classifier_weight)


# --- K-means routing (S3Editor, docs/s3editor.md) ---------------------------------------


@dataclass(frozen=True, eq=False)
class AttributeClusters:
    """The attribute set A clustered into K groups.

    names ``A`` strings; embeddings ``(A, D)`` unit rows; labels ``(A,)`` int64 in
    [0, K); centroids ``(K, D)`` unit rows (member means, normalised: routing is by
    cosine). Clusters are numbered by their first member (cluster 0 holds attribute 0)."""

    names: tuple[str, ...]
    embeddings: Tensor
    labels: Tensor
    centroids: Tensor

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def route(self, embedding: Tensor) -> int:
        """Cluster of one attribute embedding ``(D,)``: a known attribute (cosine ≥
        KNOWN_COSINE with it) keeps its own cluster; anything else goes to the nearest
        centroid by cosine (ties: lowest index)."""
        return int(self.route_rows(embedding.reshape(1, -1))[0])

    def route_rows(self, directions: Tensor) -> Tensor:
        """``route`` for each row of ``directions`` ``(B, D)``: ``(B,)`` int64 on their device."""
        e = F.normalize(directions.detach().float(), dim=-1)
        embeddings, centroids = self.embeddings.to(e), self.centroids.to(e)
        cos_known, best = (e @ embeddings.T).max(dim=1)
        nearest = (e @ centroids.T).argmax(dim=1)
        return torch.where(cos_known >= KNOWN_COSINE, self.labels.to(e.device)[best], nearest)

    def route_name(self, name: str) -> int:
        """Cluster of a known attribute by name (CelebA spelling, or a name added with
        ``with_attribute``)."""
        if name not in self.names:
            raise S3EditError(
                f"Unknown attribute {name!r}: use one of {', '.join(self.names)}, "
                "or add it as a user-defined attribute first."
            )
        return int(self.labels[self.names.index(name)])

    def members(self, cluster: int) -> list[str]:
        """Names of the attributes in one cluster."""
        return [n for n, lab in zip(self.names, self.labels.tolist()) if lab == cluster]

    def with_attribute(self, name: str, embedding: Tensor) -> "AttributeClusters":
        """A copy that also knows a user-defined attribute, routed to its nearest centroid
        (centroids unchanged, so routing of every other attribute is unchanged)."""
        if name in self.names:
            raise S3EditError(f"Attribute {name!r} already exists: pick another name.")
        e = F.normalize(embedding.reshape(1, -1).to(self.embeddings), dim=-1)
        label = self.labels.new_tensor([self.route(e[0])])
        return AttributeClusters(
            names=self.names + (name,),
            embeddings=torch.cat([self.embeddings, e]),
            labels=torch.cat([self.labels, label]),
            centroids=self.centroids,
        )

    def to_dict(self) -> dict:
        """JSON-ready record for a weight set: ``{"k", "names", "labels"}``; the
        embeddings come from the classifier, so ``from_labels`` rebuilds the rest."""
        return {"k": self.k, "names": list(self.names), "labels": self.labels.tolist()}

    @classmethod
    def from_labels(
        cls, embeddings: Tensor, names: Sequence[str], labels: Sequence[int], k: int | None = None
    ) -> "AttributeClusters":
        """Rebuild from stored labels: centroids = normalised member means ``(K, D)``."""
        emb = F.normalize(embeddings.detach().float(), dim=-1)
        lab = torch.as_tensor(list(labels), dtype=torch.long, device=emb.device)
        k = int(lab.max()) + 1 if k is None else int(k)
        if len(names) != emb.shape[0] or lab.shape[0] != emb.shape[0]:
            counts = f"{len(names)} names, {lab.shape[0]} labels, {emb.shape[0]} embeddings"
            raise ValueError(f"mismatched attribute record: {counts}")
        sums = emb.new_zeros(k, emb.shape[1]).index_add_(0, lab, emb)
        if bool((torch.bincount(lab, minlength=k) == 0).any()):
            raise ValueError(f"labels leave a cluster of {k} empty: {lab.tolist()}")
        return cls(tuple(names), emb, lab, F.normalize(sums, dim=-1))


def cluster_attributes(
    embeddings: Tensor,
    names: Sequence[str],
    k: int = DEFAULT_CLUSTERS,
    seed: int = 0,
    iters: int = KMEANS_ITERS,
) -> AttributeClusters:
    """K-means over attribute embeddings ``(A, D)`` (S3Editor's semantic clusters).

    scipy ``kmeans2`` with k-means++ seeding from ``seed`` (Euclidean K-means on unit
    vectors: spherical K-means up to the centroid norm). Deterministic repairs:
    - K > A: K becomes A (each attribute its own cluster): check ``result.k``.
    - empty clusters (duplicate embeddings, unlucky seeds): ``_fill_empty_clusters``.
    Clusters are then renumbered by their first member, so the numbering does not
    depend on kmeans2's internal order."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    data = F.normalize(embeddings.detach().double(), dim=-1).cpu().numpy()
    A = data.shape[0]
    if A == 0:
        raise ValueError("no attribute embeddings to cluster")
    k = min(k, A)
    if k == A:
        labels = np.arange(A)
    elif k == 1:
        labels = np.zeros(A, dtype=np.int64)
    else:
        with warnings.catch_warnings():  # empty clusters are repaired below
            warnings.simplefilter("ignore")
            _, labels = kmeans2(data, k, iter=iters, minit="++", **_rng_kwarg(seed))
    labels = _fill_empty_clusters(data, np.asarray(labels, dtype=np.int64), k)
    return AttributeClusters.from_labels(embeddings, names, _canonical_labels(labels), k)


def _rng_kwarg(seed: int) -> dict:
    """scipy >= 1.15 names the generator ``rng``; older releases (our floor is 1.11)
    only know ``seed``. Both take a numpy Generator."""
    gen = np.random.default_rng(seed)
    return {"rng": gen} if "rng" in inspect.signature(kmeans2).parameters else {"seed": gen}


def _fill_empty_clusters(data: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Give every empty cluster one point, deterministically: the point farthest from
    its own centroid among clusters with ≥ 2 members (ties: lowest index) moves to the
    lowest-numbered empty cluster; repeat. Needs A ≥ k. ``(A, D)``, ``(A,)`` -> ``(A,)``."""
    labels = labels.copy()
    for _ in range(k):
        counts = np.bincount(labels, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if empty.size == 0:
            break
        sums = np.zeros((k, data.shape[1]))
        np.add.at(sums, labels, data)
        centroids = sums / np.maximum(counts, 1)[:, None]
        dist = np.linalg.norm(data - centroids[labels], axis=1)
        dist[counts[labels] < 2] = -1.0
        labels[int(np.argmax(dist))] = empty[0]
    return labels


def _canonical_labels(labels: np.ndarray) -> list[int]:
    """Renumber clusters in order of first appearance: [3, 3, 0, 1] -> [0, 0, 1, 2]."""
    order: dict[int, int] = {}
    return [order.setdefault(int(lab), len(order)) for lab in labels]


# --- The cluster transforms T_k (S3Editor, docs/s3editor.md) ----------------------------


class ClusterTransforms(nn.Module):
    """K transforms T_k: cat(z_id' (B, D), z_lnd (B, 102)) -> residual (B, F) added to
    DVA's fusion output (``face_code``).

    Each T_k is ``Linear(D+102, H) -> SiLU -> Linear(H, F)`` with the last layer (weight
    and bias) zero-initialised, so every T_k outputs exactly 0 until trained and an
    untuned model edits exactly like DVA. Why this shape rather than one zero Linear:
    the first layer keeps its ordinary random init, so its landmark input columns
    (``landmark_columns``, the "landmark-carrying neurons" that ``s3edit.s3.groups``
    splits by face region) start non-zero: the group-sparse optimizer can rank them
    and zeroing a group is a real decision (with one zero Linear every group would
    start at zero, already "sparse"). The hidden non-linearity also lets T_k bend the
    fused code, where a single Linear would only re-weight DVA's own fusion matrix."""

    def __init__(
        self,
        k: int = DEFAULT_CLUSTERS,
        id_dim: int = 512,
        lnd_dim: int = 102,
        face_dim: int = 512,
        hidden: int = DEFAULT_HIDDEN,
    ):
        super().__init__()
        self.id_dim, self.lnd_dim, self.face_dim = id_dim, lnd_dim, face_dim
        self.transforms = nn.ModuleList(
            _zero_residual_mlp(id_dim + lnd_dim, hidden, face_dim) for _ in range(k)
        )

    @property
    def k(self) -> int:
        return len(self.transforms)

    @property
    def landmark_columns(self) -> range:
        """Columns of each first-layer weight ``(H, D+102)`` that read z_lnd."""
        return range(self.id_dim, self.id_dim + self.lnd_dim)

    def first_layer(self, cluster: int) -> nn.Linear:
        """T_k's first Linear: its weight's landmark columns are the sparsified neurons."""
        return self.transforms[cluster][0]

    def forward(self, z_id: Tensor, z_lnd: Tensor, cluster: int | Tensor) -> Tensor:
        """Residual T_k(cat(z_id, z_lnd)) ``(B, F)``; ``cluster`` is one int for the whole
        batch or ``(B,)`` int64, one per sample."""
        x = torch.cat([z_id, z_lnd], dim=-1)
        if isinstance(cluster, int):
            return self.transforms[cluster](x)
        cluster = cluster.to(x.device)
        out = x.new_zeros(x.shape[0], self.face_dim)
        for k in torch.unique(cluster).tolist():
            rows = cluster == k
            out[rows] = self.transforms[k](x[rows]).to(out.dtype)  # bf16 under autocast
        return out


def _zero_residual_mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


def face_code(
    fuse: FuseFn, transforms: ClusterTransforms, z_id: Tensor, z_lnd: Tensor, cluster: int | Tensor
) -> Tensor:
    """z_face' = fuse(z_id', z_lnd) + T_k(cat(z_id', z_lnd))  (S3Editor, docs/s3editor.md).

    ``fuse(z_id (B, D), z_lnd (B, 102)) -> (B, F)`` is DVA's fusion (its Linear(614, 512)
    over the concatenation). Untuned T_k output exactly 0, so this equals ``fuse`` bit
    for bit."""
    return fuse(z_id, z_lnd) + transforms(z_id, z_lnd, cluster)


# --- Pseudo-edits for self-training (S3Editor, docs/s3editor.md) -----------------------


class PseudoEdit(NamedTuple):
    """z_face ``(B, F)`` = x̂; z_id ``(B, D)`` the moved identity; cluster ``(B,)`` used."""

    z_face: Tensor
    z_id: Tensor
    cluster: Tensor


def sample_edit_draws(
    batch: int, num_attributes: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """S3Editor's draws a ~ U(A), γ ~ U(0, 1): ``(B,)`` int64 indices, ``(B,)`` float32."""
    attr = torch.randint(num_attributes, (batch,), generator=generator)
    gamma = torch.rand(batch, generator=generator)
    return attr, gamma


def pseudo_edit(
    z_id: Tensor,
    z_lnd: Tensor,
    attr: Tensor,
    gamma: Tensor,
    *,
    clusters: AttributeClusters,
    transforms: ClusterTransforms,
    fuse: FuseFn,
    conds_mean: Tensor,
    conds_std: Tensor,
) -> PseudoEdit:
    """x̂ = T_k(denorm(norm(x) + γ·a)) for a batch (S3Editor self-training, docs/s3editor.md).

    z_id ``(B, D)``, z_lnd ``(B, 102)``, attr ``(B,)`` indices into ``clusters.names``,
    gamma ``(B,)``. γ·a is applied in the units of DVA's edit rule (``edit_identity``:
    × √D, then l2norm), so γ ~ U(0, 1) spans the edit strengths a user asks for (DVA's
    default s = 0.3): a bare γ·a would move a normalised code of length ≈ √D by at most
    1, a no-op edit. "T_k(·)" is read as routing through cluster k = cluster of a:
    z_face = fuse(z_id', z_lnd) + T_k(cat(z_id', z_lnd))."""
    attr = attr.to(clusters.labels.device)
    direction = clusters.embeddings[attr].to(z_id)
    moved = edit_identity(z_id, direction, gamma.to(z_id), conds_mean, conds_std)
    cluster = clusters.labels[attr]
    return PseudoEdit(face_code(fuse, transforms, moved, z_lnd, cluster), moved, cluster)
