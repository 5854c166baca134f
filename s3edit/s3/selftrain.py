"""S3Editor's self-training objective and its state in a weight set (Wang et al., 2024;
docs/s3editor.md).

Per step, for a batch of real frames f = x0 (B, 3, S, S) with frozen semantics
z_id (B, D), z_lnd (B, 102) (computed once: the encoders never learn):

1. L_gen: DVA's denoising loss on the real frames (``s3edit.train.objective.dva_terms``:
   L1 on ε for two noises at one t ~ U{0..999}, plus the face-mask x̂0 agreement),
   under the unedited z_face = fuse(z_id, z_lnd) (an edit of strength 0 is no edit,
   so no T_k).
2. Pseudo-edit (``s3edit.s3.routing.pseudo_edit``): a ~ U(A), γ ~ U(0, 1),
   x̂ = T_k(denorm(norm(z_id) + γ·a)), k = the cluster of a.
3. f̂, the pseudo-edited frame: ONE-STEP x̂0 prediction. t' ~ U{0..t_max-1}
   (t_max = 500), x_t' = √ᾱ x0 + √(1-ᾱ) ε' from the REAL frame, and
   f̂ = (x_t' − √(1-ᾱ) ε_θ(x_t', t', x̂)) / √ᾱ. Why: a full DDIM decode costs
   (steps) UNet passes per sample and back-propagating through it needs memory for
   all of them; one pass is affordable, fully differentiable (gradients reach the
   UNet, the fusion and T_k), and DVA's training already makes x̂0 at one step
   meaningful. t' stays below t_max = 500 (our choice) because above it the one-step
   x̂0 is mostly the mean face and its identity says little.
4. L_id = mean(1 − cos(ID(f), ID(f̂))), ID = the model's own frozen identity encoder
   (``DVA.z_id``; both vectors unit length, so 1 − cos = ½‖ID(f) − ID(f̂)‖²: the
   paper's distance, squared and halved, which keeps its gradient finite at 0).
5. L_faith = mean_b[ Σ_{a'≠a} |P(f)_{a'} − P(f̂)_{a'}| − γ·|P(f)_a − P(f̂)_a| ],
   P = sigmoid(classifier heads on ID(·)) (DVA's attribute heads). Probabilities,
   not logits: the −γ term rewards moving the target attribute, and a bounded P
   keeps that reward from growing without end.
6. L = λ_gen·L_gen + λ_id·L_id + λ_faith·L_faith, λ = (1, 0.5, 0.1) (the paper's weights).

All three UNet calls (two for L_gen, one for f̂) run as ONE batched forward, so DDP
sees one forward per backward.

Paired edits (``pairs``, a ``PairTerm``; docs/s3editor.md "With edit pairs"): L_gen is
DVA's objective with its paired-edit and keep terms (``DVAObjective.rows``/``terms``),
whose edited codes pass through the routed transforms (``S3Objective.edited_face``:
fuse(z_id', z_lnd) + T_k(·), k = the cluster of the edit's direction), in the same one
forward. Then L = λ_gen·L_gen + w_pair·L_pair + w_keep·L_keep + λ_id·L_id + λ_faith·L_faith,
and the T_k learn from the pair and keep rows even without self-training.

What trains (``S3Config.train``): ``"all"`` (default) — T_k, the fusion Linear and
the UNet: L_gen adapts the autoencoder to the footage (as DVA's own fine-tuning does)
while L_id/L_faith shape the edits; ``"transforms"`` — T_k only, the DVA untouched
(cheaper; an ablation). The identity, landmark and parser nets are frozen in both.

Ablation switches: ``self_train=False`` (L_gen only: T_k get no gradient and stay 0),
``routing=False`` (K = 1: one transform for every attribute), ``clusters`` (K),
``sparsity`` (q; q = 0 runs the base optimizer, Adam, bit for bit).

The optimizer is ``DHSPG`` over every trainable parameter with the 7·K landmark
groups of T_k (``s3edit.s3.groups``): warm-up for ``warmup_frac`` of the steps, the
sparsification window for ``sparsify_frac``, then exactly Q = ⌊q·7K⌋ zero groups;
through its loop hooks (``DHSPG.before_step``/``after_training``) each step's loss is
reported and the best sparse iterate restored.

In a weight set (``s3edit.weights.weightset``): config.json ``"s3"`` holds the record
of ``s3_record`` (K, q, Q, the clusters, the groups zeroed, per cluster too, the
switches), ``s3.safetensors`` the transforms' tensors (``ClusterTransforms``
state-dict keys: ``transforms.{k}.0.weight`` (H, D+102), ``.0.bias``, ``.2.weight``
(F, H), ``.2.bias``). ``load_s3`` reads them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from s3edit.errors import InputError, WeightsError
from s3edit.model.ddim import NUM_TRAIN_TIMESTEPS
from s3edit.model.dva import DVA
from s3edit.train.data import CropData
from s3edit.train.loop import TrainConfig, TrainResult, evaluate, make_accelerator, train
from s3edit.train.objective import (
    DVAObjective,
    PairTerm,
    freeze_encoders,
    noisy,
    precompute_semantics,
    predict_x0,
    raise_fusion_gain,
)
from s3edit.model.attributes import Classifier
from s3edit.weights.weightset import S3_FILE, WeightSet
from s3edit.s3.dhspg import DHSPG, DHSPGConfig, num_sparse_groups
from s3edit.s3.groups import FACE_REGIONS, landmark_groups
from s3edit.s3.routing import (
    DEFAULT_CLUSTERS,
    DEFAULT_HIDDEN,
    AttributeClusters,
    ClusterTransforms,
    attribute_embeddings,
    cluster_attributes,
    face_code,
    pseudo_edit,
    sample_edit_draws,
)

LAMBDA_ID, LAMBDA_FAITH, LAMBDA_GEN = 0.5, 0.1, 1.0  # the paper's loss weights (docs/s3editor.md)
SELF_TRAIN_T_MAX = 500  # one-step x̂0 timesteps t' < 500 (our choice; module docstring)
TRAINABLE = ("all", "transforms")
S3_RECORD_VERSION = 1
S3_TENSORS = S3_FILE  # "s3.safetensors" in the weight-set folder


@dataclass(frozen=True)
class S3Config:
    """S3Editor's switches and weights (defaults: the paper's, docs/s3editor.md)."""

    self_train: bool = True  # False: L_gen only (the "baseline" row of the ablation)
    routing: bool = True  # False: K = 1
    clusters: int = DEFAULT_CLUSTERS
    sparsity: float = 0.1  # q; Q = ⌊q·7K⌋ zero groups
    lambda_id: float = LAMBDA_ID
    lambda_faith: float = LAMBDA_FAITH
    lambda_gen: float = LAMBDA_GEN
    t_max: int = SELF_TRAIN_T_MAX
    hidden: int = DEFAULT_HIDDEN  # width of each T_k's hidden layer
    train: str = "all"  # "all": T_k + fusion + UNet; "transforms": T_k only
    warmup_frac: float = 0.3  # of the steps, before the Q groups are chosen
    sparsify_frac: float = 0.4  # of the steps, the push/projection window
    cluster_seed: int = 0  # K-means seed

    def __post_init__(self) -> None:
        if self.clusters < 1:
            raise InputError(f"--clusters must be at least 1, got {self.clusters}.")
        if not 0.0 <= self.sparsity <= 1.0:
            raise InputError(f"--sparsity must be between 0 and 1, got {self.sparsity}.")
        if self.train not in TRAINABLE:
            raise InputError(f"unknown --train {self.train!r}; choose one of {', '.join(TRAINABLE)}.")
        if not 1 <= self.t_max <= NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"t_max must be in [1, {NUM_TRAIN_TIMESTEPS}]")

    @property
    def k(self) -> int:
        """K actually used: 1 without routing."""
        return self.clusters if self.routing else 1


def check_trainable(cfg: S3Config, pairs: bool, pair_gain: float = 1.0) -> None:
    """Refuse a run that would train nothing or touch what it promises to leave: with
    ``train="transforms"`` the T_k learn from the pseudo-edits and from the pair and keep
    rows (``pairs``), so without either there is no gradient; and a fusion gain would
    change the network that ``"transforms"`` leaves as it is."""
    if cfg.train != "transforms":
        return
    if not cfg.self_train and not pairs:
        raise InputError("--train transforms with --no-self-train and no --pairs trains nothing: the "
                         "transforms learn from self-training or from edit pairs; drop one of the two "
                         "or give --pairs.")
    if pairs and pair_gain != 1:
        raise InputError("--pair-gain changes the network's fusion layer, which --train transforms "
                         "leaves as it is; drop one of the two.")


# --- the objective ----------------------------------------------------------------------


def attribute_probs(classifier_tensors: dict[str, Tensor], z_id: Tensor) -> Tensor:
    """P = sigmoid(W·norm(z_id) + b): (B, D) -> (B, A)."""
    c = classifier_tensors
    return torch.sigmoid(F.linear((z_id - c["conds_mean"]) / c["conds_std"], c["weight"], c["bias"]))


def faithfulness_loss(p_f: Tensor, p_hat: Tensor, attr: Tensor, gamma: Tensor) -> Tensor:
    """L_faith (module docstring): p_f, p_hat (B, A); attr (B,) int64; gamma (B,) -> ()."""
    diff = (p_f - p_hat).abs()
    target = F.one_hot(attr, diff.shape[1]).to(diff)
    others = (diff * (1 - target)).sum(1)
    moved = (diff * target).sum(1)
    return (others - gamma.to(diff) * moved).mean()


def identity_loss(id_f: Tensor, id_hat: Tensor) -> Tensor:
    """L_id = mean(1 − cos): (B, D), (B, D) -> ()."""
    return (1 - F.cosine_similarity(id_f, id_hat, dim=-1)).mean()


class S3Objective(DVAObjective):
    """S3Editor's objective as one module (what DDP wraps): ``forward(batch) -> {"loss",
    "gen", "id", "faith", "simple", "reg"}`` (``id``/``faith`` only when self-training;
    + ``"pair"`` and ``"keep"`` with a ``PairTerm``).

    ``batch``: x0 (B, 3, S, S), z_id (B, D), z_lnd (B, 102), mask (B, 1, S, S), lnd01
    (B, 68, 2) landmarks in [0, 1] of the real frames, and ``draw``'s t, eps1, eps2 (L_gen), t_st, eps_st, attr, gamma
    (pseudo-edit); with pairs, also DVA's objective's pair and keep draws and frames.

    With ``pairs`` (module docstring, "Paired edits"), L_gen is DVA's objective with its
    paired-edit and keep terms, whose edited codes pass through the routed transforms as
    an edit does: ``edited_face``."""

    name = "s3"

    def __init__(self, model: DVA, transforms: ClusterTransforms, clusters: AttributeClusters,
                 classifier: Classifier, cfg: S3Config, face_weight: float = 1.0, pairs: PairTerm | None = None):
        super().__init__(model, face_weight, pairs)
        self.transforms, self.clusters, self.cfg = transforms, clusters, cfg
        for key, value in classifier.tensors().items():
            self.register_buffer(f"cls_{key}", value.detach().float().clone(), persistent=False)

    @property
    def classifier_tensors(self) -> dict[str, Tensor]:
        return {k: getattr(self, f"cls_{k}") for k in ("weight", "bias", "conds_mean", "conds_std")}

    def draw(self, gen: torch.Generator, batch: int, num_frames: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        """The random numbers of one global batch (CPU): DVA's (with pairs, its pair and
        keep rows'), then the pseudo-edits'."""
        draws = super().draw(gen, batch, num_frames, shape)
        if self.cfg.self_train:
            attr, gamma = sample_edit_draws(batch, len(self.clusters.names), gen)
            draws |= {"attr": attr, "gamma": gamma,
                      "t_st": torch.randint(self.cfg.t_max, (batch,), generator=gen),
                      "eps_st": torch.randn((batch, *shape), generator=gen)}
        return draws

    def edited_face(self, z_id: Tensor, z_lnd: Tensor, direction: Tensor) -> Tensor:
        """fuse(z_id', z_lnd) + T_k(cat(z_id', z_lnd)), k routed from the edit's direction
        (a known attribute's own cluster, else the nearest centroid)."""
        return face_code(self.model.fuse, self.transforms, z_id, z_lnd, self.clusters.route_rows(direction))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        m, c = self.model, self.cfg
        x0 = batch["x0"]
        B = x0.shape[0]
        xs, ts, zs = self.rows(batch)
        n = sum(len(x) for x in xs)
        if c.self_train:
            cls = self.classifier_tensors
            edit = pseudo_edit(batch["z_id"], batch["z_lnd"], batch["attr"], batch["gamma"], clusters=self.clusters,
                               transforms=self.transforms, fuse=m.fuse,
                               conds_mean=cls["conds_mean"], conds_std=cls["conds_std"])
            a_st = self.abar[batch["t_st"]].view(-1, 1, 1, 1)
            x_st = noisy(x0, batch["eps_st"], a_st)
            xs, ts, zs = xs + [x_st], ts + [batch["t_st"]], zs + [edit.z_face]
        pred = m(torch.cat(xs), torch.cat(ts), torch.cat(zs)).float()  # one forward (DDP); fp32 losses
        parts = self.terms(batch, xs, pred[:n])
        gen = parts["simple"] + self.face_weight * parts["reg"]
        loss = parts.pop("loss") + (c.lambda_gen - 1) * gen  # λ_gen·L_gen (+ the pair and keep terms)
        out = {"gen": gen, **parts}
        if c.self_train:
            f_hat = predict_x0(x_st, pred[n:n + B], a_st)
            id_hat = m.z_id(f_hat, batch["lnd01"]).float()  # f̂ keeps f's pose: f's landmarks
            out["id"] = identity_loss(batch["z_id"], id_hat)
            out["faith"] = faithfulness_loss(attribute_probs(cls, batch["z_id"]), attribute_probs(cls, id_hat),
                                             batch["attr"], batch["gamma"])
            loss = loss + c.lambda_id * out["id"] + c.lambda_faith * out["faith"]
        return {"loss": loss, **out}

    def describe(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed."""
        pairs = {} if self.pairs is None else {"pairs": self.pairs.describe()}
        return {"objective": self.name, "s3": asdict(self.cfg), "clusters": self.clusters.to_dict(), **pairs}


# --- building the pieces -------------------------------------------------------------------


def require_classifier(ws: WeightSet) -> Classifier:
    if ws.classifier is None:
        raise InputError(f"weight set {ws.name or '(preset)'!r} has no attribute classifier, which the s3 "
                         "objective needs; start --from a weight set with one, or use --objective dva.")
    return ws.classifier


def routing_state(ws: WeightSet, cfg: S3Config) -> tuple[AttributeClusters, ClusterTransforms]:
    """The clusters and transforms to train: the weight set's own when it was tuned with
    the same K before (training continues), else K-means over its attribute heads and
    fresh zero-output transforms (seed torch first for a reproducible first layer)."""
    classifier = require_classifier(ws)
    stored = load_s3(ws)
    if stored is not None:
        if stored.clusters.k != min(cfg.k, len(classifier.names)):
            raise InputError(f"weight set {ws.name!r} was tuned with K={stored.clusters.k} clusters; pass "
                             f"--clusters {stored.clusters.k} to continue, or start from an untuned set.")
        return stored.clusters, stored.transforms
    names = list(classifier.names)
    clusters = cluster_attributes(attribute_embeddings(classifier.weight.float()), names, cfg.k, cfg.cluster_seed)
    c = ws.config
    transforms = ClusterTransforms(clusters.k, c.id_dim, c.lnd_dim, c.face_dim, cfg.hidden)
    return clusters, transforms.to(next(ws.model.parameters()).device)


def make_optimizer(objective: S3Objective, steps: int, lr: float) -> DHSPG:
    """DHSPG (base Adam) over the objective's trainable parameters, the 7·K landmark
    groups of its transforms, the window placed by ``warmup_frac``/``sparsify_frac``."""
    c = objective.cfg
    if c.train == "transforms":
        objective.model.requires_grad_(False)
    params = [p for p in objective.parameters() if p.requires_grad]
    warmup = int(steps * c.warmup_frac)
    window = max(1, min(int(steps * c.sparsify_frac), steps - warmup))
    config = DHSPGConfig(base="adam", lr=lr, q=c.sparsity, warmup_steps=warmup, sparsify_steps=window)
    return DHSPG(params, landmark_groups(objective.transforms), config)


# --- the record in a weight set --------------------------------------------------------------


def zeroed_by_cluster(k: int, zero_names: list[str]) -> dict[str, list[str]]:
    """{"0": ["mouth", ...], ...} from group names ``T{k}/{region}``, regions in face order."""
    out: dict[str, list[str]] = {str(i): [] for i in range(k)}
    for name in zero_names:
        cluster, region = name.split("/", 1)
        out[cluster[1:]].append(region)
    order = list(FACE_REGIONS)
    return {key: sorted(v, key=order.index) for key, v in out.items()}


def zero_group_names(transforms: ClusterTransforms) -> list[str]:
    """Names of the landmark groups whose weights are exactly zero in ``transforms``."""
    return [g.name for g in landmark_groups(transforms)
            if not bool(g.param.detach()[:, list(g.columns)].any())]


def s3_record(cfg: S3Config, clusters: AttributeClusters, transforms: ClusterTransforms,
              zero_names: list[str], losses: dict[str, float] | None = None) -> dict[str, Any]:
    """config.json "s3" of a tuned weight set (read by ``s3edit weights list``);
    ``losses``: the objective's terms for the written weights."""
    groups = 7 * clusters.k
    return {
        "version": S3_RECORD_VERSION,
        "K": clusters.k,
        "q": cfg.sparsity,
        "Q": num_sparse_groups(cfg.sparsity, groups),
        "groups": groups,
        "groups_zeroed": list(zero_names),
        "zeroed_per_cluster": zeroed_by_cluster(clusters.k, zero_names),
        "clusters": clusters.to_dict(),
        "members": {str(k): clusters.members(k) for k in range(clusters.k)},
        "hidden": int(transforms.first_layer(0).out_features),
        "self_train": cfg.self_train,
        "routing": cfg.routing,
        "train": cfg.train,
        "lambda": {"id": cfg.lambda_id, "faith": cfg.lambda_faith, "gen": cfg.lambda_gen},
        "f_hat": f"one-step x0 prediction at t < {cfg.t_max}",
        "tensors": S3_TENSORS,
        **({"objective": losses} if losses else {}),
    }


def s3_tensors(transforms: ClusterTransforms) -> dict[str, Tensor]:
    return {k: v.detach().float().cpu().contiguous() for k, v in transforms.state_dict().items()}


@dataclass
class S3State:
    """A weight set's routing: clusters, transforms (eval, on the model's device), record."""

    clusters: AttributeClusters
    transforms: ClusterTransforms
    record: dict[str, Any]


def load_s3(ws: WeightSet) -> S3State | None:
    """The weight set's S3Editor state, or None for a plain DVA set (``"s3": null``)."""
    rec = ws.meta.get("s3")
    if not rec:
        return None
    where = ws.name or "this weight set"
    tensors = getattr(ws, "s3_tensors", None)
    if ws.classifier is None or tensors is None:
        raise WeightsError(f"weight set {where!r} records S3Editor transforms but lacks "
                           f"{'its classifier' if ws.classifier is None else S3_TENSORS}; re-run `s3edit tune`.")
    try:
        stored = rec["clusters"]
        if list(stored["names"]) != list(ws.classifier.names):
            raise ValueError("its clusters name other attributes than its classifier")
        clusters = AttributeClusters.from_labels(attribute_embeddings(ws.classifier.weight.float()),
                                                 stored["names"], stored["labels"], int(stored["k"]))
        c = ws.config
        transforms = ClusterTransforms(clusters.k, c.id_dim, c.lnd_dim, c.face_dim, int(rec["hidden"]))
        transforms.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"the S3Editor state of weight set {where!r} is damaged ({str(exc).splitlines()[0]}); "
                           "re-run `s3edit tune`.") from exc
    device = next(ws.model.parameters()).device
    return S3State(clusters, transforms.to(device).eval(), rec)


def first_last(losses: list[dict[str, float]], window: int = 10) -> tuple[dict[str, float], dict[str, float]]:
    """Mean of each loss term over the first and the last ``window`` steps."""
    if not losses:
        return {}, {}
    w = max(1, min(window, len(losses) // 2 or 1))

    def mean(rows):
        return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}

    return mean(losses[:w]), mean(losses[-w:])



# --- the whole run ----------------------------------------------------------------------


@dataclass
class S3TrainResult:
    """The trained state: EMA DVA (``train.ema``), clusters, transforms (best sparse
    iterate, exact zeros), the names of the zeroed groups, the config.json record, and
    the objective on fixed draws before and after (the written weights: EMA DVA + T_k;
    main process only, else empty)."""

    train: TrainResult
    clusters: AttributeClusters
    transforms: ClusterTransforms
    zeroed: list[str]
    record: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]


def train_s3(ws: WeightSet, data: CropData, train_cfg: TrainConfig, cfg: S3Config, checkpoint_dir: Path,
             on_step=None, accelerator=None, keep_other: bool = False, pairs: PairTerm | None = None) -> S3TrainResult:
    """Self-train ``ws`` (in place) on ``data`` (module docstring); resumable from
    ``checkpoint_dir`` (``keep_other``: as in ``train``); runs under Accelerate (one or
    many processes). ``pairs``: DVA's paired-edit and keep terms join L_gen, their edits
    routed through the transforms (module docstring)."""
    check_trainable(cfg, pairs is not None, pairs.gain if pairs is not None else 1.0)
    acc = accelerator or make_accelerator()
    model = ws.model
    freeze_encoders(model)
    model.to(acc.device)
    torch.manual_seed(train_cfg.seed)  # the transforms' first layers
    clusters, transforms = routing_state(ws, cfg)
    classifier = require_classifier(ws)
    if pairs is not None:
        raise_fusion_gain(model, pairs)  # a resumed run's checkpoint replaces these weights
    objective = S3Objective(model, transforms.to(acc.device).train(), clusters, classifier, cfg,
                            train_cfg.face_weight, pairs).to(acc.device)
    frames = precompute_semantics(model, data, device=acc.device).per_frame(data)
    before = evaluate(objective, frames, train_cfg.batch_size) if acc.is_main_process else {}
    opt = make_optimizer(objective, train_cfg.steps, train_cfg.lr)
    result = train(objective, frames, train_cfg, checkpoint_dir, opt, accelerator=acc, on_step=on_step,
                   keep_other=keep_other)
    transforms.eval()
    after = {}
    if acc.is_main_process:
        written = S3Objective(result.ema, transforms, clusters, classifier, cfg, train_cfg.face_weight, pairs)
        after = evaluate(written.to(acc.device), frames, train_cfg.batch_size)
    zeroed = [opt.groups[i].name for i in opt.zero_groups()]
    record = s3_record(cfg, clusters, transforms, zeroed, after or None)
    return S3TrainResult(result, clusters, transforms, zeroed, record, before, after)
