"""Attribute heads in an identity space: logistic regression on normalised z_id.

The heads use DVA's classifier format (``s3edit.model.attributes.Classifier``)::

    logits = W · norm(z_id) + b,    norm(z) = (z - conds_mean) / conds_std

so ``edit_direction(W[a])`` is the edit direction of attribute a, exactly as with DVA's
own classifier. One head per attribute is an L2-regularised logistic regression
(L-BFGS from scipy on the mean log-loss; the bias is not penalised; classes weighted to
equal total weight so a 1:8 label split does not just learn the bias). The penalty is
picked by grouped cross-validation on the training part, and accuracy is measured on
held-out *people*: a split by ``groups`` keeps one person's photos (London's neutral
and smiling pair, a face and its synthetic-glasses copy) on one side.

Why not scikit-learn: it is not a dependency of s3edit, and a 128-d logistic regression
is twenty lines over ``scipy.optimize.minimize``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from scipy.optimize import minimize
from scipy.special import expit

from s3edit.errors import InputError, WeightsError
from s3edit.model.attributes import Classifier
from s3edit.weights.hashing import write_checksums
from s3edit.weights.weightset import CLASSIFIER_FILE, CONFIG_FILE, TENSOR_FILES, read_config
from s3edit.paths import atomic_path, write_json_atomic

# Penalty grid for lambda/2 * |w|^2 on the mean log-loss (normalised inputs: unit
# variance per dimension, so one grid serves every head).
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
TEST_FRACTION = 0.2  # share of people held out for the reported accuracy
CV_FOLDS = 4  # grouped folds for picking the penalty
STD_FLOOR = 1e-6  # conds_std never divides by ~0
NAMES_FILE = "attributes.json"
REPORT_FILE = "heads.json"


@dataclass
class HeadData:
    """Labelled identity vectors for one attribute: z (N, D) float, y (N,) 0/1,
    groups (N,) person ids (kept on one side of every split), sources (N,) names for
    per-source accuracy."""

    name: str
    z: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    sources: np.ndarray

    def __post_init__(self) -> None:
        self.z = np.asarray(self.z, np.float64)
        self.y = np.asarray(self.y, np.float64)
        self.groups = np.asarray(self.groups)
        self.sources = np.asarray(self.sources)
        n = len(self.z)
        if not (len(self.y) == len(self.groups) == len(self.sources) == n):
            raise ValueError(f"{self.name}: z, y, groups and sources differ in length")
        if n == 0 or len(np.unique(self.y)) < 2:
            raise ValueError(f"{self.name}: needs examples of both classes, got {n} with labels {np.unique(self.y)}")


@dataclass
class HeadFit:
    """A fitted head (weight (D,), bias, both in normalised z_id units) and its figures.
    ``test_*`` are for the fit on the training people only, measured on the held-out
    people; weight/bias are the refit on everyone (what ships)."""

    name: str
    weight: np.ndarray
    bias: float
    l2: float
    n: int
    n_positive: int
    n_train: int
    n_test: int
    train_accuracy: float
    test_accuracy: float
    test_balanced_accuracy: float
    test_by_source: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready figures (no weights)."""
        d = asdict(self)
        d.pop("weight")
        d.pop("bias")
        return d


def normalisation(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conds_mean, conds_std (1, D) of identity vectors z (N, D)."""
    z = np.asarray(z, np.float64)
    return z.mean(0, keepdims=True), np.maximum(z.std(0, keepdims=True), STD_FLOOR)


def _class_weights(y: np.ndarray) -> np.ndarray:
    """(N,) weights giving each class half of the total weight, mean 1."""
    pos = y.mean()
    if pos <= 0 or pos >= 1:  # one class only (a CV fold of a tiny set): plain weights
        return np.ones_like(y)
    return np.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, balanced: bool = True) -> tuple[np.ndarray, float]:
    """Minimise mean_i c_i·logloss(w·x_i + b, y_i) + l2/2·|w|^2 over (w, b).

    x (N, D) (already normalised), y (N,) 0/1 -> (w (D,), b)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    c = _class_weights(y) if balanced else np.ones_like(y)
    n, d = x.shape
    sign = 2 * y - 1

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        m = sign * (x @ w + b)  # margins
        loss = np.mean(c * np.logaddexp(0, -m)) + 0.5 * l2 * w @ w
        g = -c * sign * expit(-m) / n  # d loss / d logit
        return float(loss), np.concatenate([x.T @ g + l2 * w, [g.sum()]])

    res = minimize(loss_grad, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "gtol": 1e-8})
    return res.x[:d], float(res.x[d])


def accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> tuple[float, float]:
    """(accuracy, balanced accuracy) of logits x·w + b > 0 against y."""
    pred = (x @ w + b) > 0
    truth = y > 0.5
    acc = float(np.mean(pred == truth))
    recalls = [np.mean(pred[truth == k] == k) for k in (True, False) if np.any(truth == k)]
    return acc, float(np.mean(recalls))


def group_split(groups: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True for the held-out rows: about ``test_fraction`` of the distinct
    groups, chosen at random with ``seed``."""
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(test_fraction * len(unique))))
    held = rng.choice(unique, size=min(n_test, len(unique) - 1), replace=False)
    return np.isin(groups, held)


def group_folds(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) int fold number per row, whole groups per fold."""
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = dict(zip(unique[order], np.arange(len(unique)) % folds))
    return np.array([fold_of[g] for g in groups])


def choose_l2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, grid=L2_GRID,
              folds: int = CV_FOLDS, seed: int = 0) -> float:
    """The penalty of ``grid`` with the best mean balanced accuracy over grouped folds
    (ties: the larger penalty, the smoother head)."""
    fold = group_folds(groups, folds, seed)
    scores = []
    for l2 in grid:
        accs = []
        for k in range(folds):
            test = fold == k
            if len(np.unique(y[~test])) < 2 or not test.any():
                continue
            w, b = fit_logistic(x[~test], y[~test], l2)
            accs.append(accuracy(x[test], y[test], w, b)[1])
        scores.append(np.mean(accs) if accs else 0.0)
    best = max(scores)
    return max(l2 for l2, s in zip(grid, scores) if s >= best - 1e-12)


def fit_head(data: HeadData, mean: np.ndarray, std: np.ndarray, test_fraction: float = TEST_FRACTION,
             seed: int = 0, grid=L2_GRID, off: np.ndarray | None = None) -> HeadFit:
    """Fit one head: penalty by grouped CV on the training people, accuracy on the
    held-out people, then the shipped refit on all rows with that penalty. ``off``
    (k, D): rows (other heads' weights, normalised units) the head's weight must be
    orthogonal to: the features lose their components along them before the fit, so
    the weight, a sum of feature rows plus the penalty's shrinkage, has none either."""
    x = (data.z - mean) / std
    if off is not None and len(off):
        q, _ = np.linalg.qr(np.asarray(off, np.float64).T)  # (D, k) orthonormal basis of their span
        x = x - (x @ q) @ q.T
    y = data.y
    test = group_split(data.groups, test_fraction, seed)
    if len(np.unique(y[~test])) < 2 or len(np.unique(y[test])) < 2:
        test = group_split(data.groups, test_fraction, seed + 1)  # retry once for a 2-class test side
    l2 = choose_l2(x[~test], y[~test], data.groups[~test], grid, seed=seed)
    w, b = fit_logistic(x[~test], y[~test], l2)
    train_acc, _ = accuracy(x[~test], y[~test], w, b)
    test_acc, test_bal = accuracy(x[test], y[test], w, b)
    by_source = {str(s): accuracy(x[test & (data.sources == s)], y[test & (data.sources == s)], w, b)[0]
                 for s in np.unique(data.sources[test])}
    w_all, b_all = fit_logistic(x, y, l2)
    if off is not None and len(off):
        w_all = w_all - q @ (q.T @ w_all)  # exact zero along ``off`` (the optimiser's rounding)
    return HeadFit(
        name=data.name, weight=w_all, bias=b_all, l2=l2, n=len(y), n_positive=int(y.sum()),
        n_train=int((~test).sum()), n_test=int(test.sum()), train_accuracy=train_acc,
        test_accuracy=test_acc, test_balanced_accuracy=test_bal, test_by_source=by_source,
    )


def make_classifier(fits: list[HeadFit], mean: np.ndarray, std: np.ndarray) -> Classifier:
    """The weight-set classifier (float32) of fitted heads, rows in ``fits`` order."""
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return Classifier(
        weight=f32(np.stack([f.weight for f in fits])),
        bias=f32([f.bias for f in fits]),
        conds_mean=f32(mean).reshape(1, -1),
        conds_std=f32(std).reshape(1, -1),
        names=[f.name for f in fits],
    )


def append_heads(base: Classifier, fits: list[HeadFit]) -> Classifier:
    """``base`` with the fitted heads ``fits`` as new last rows (float32). The heads must
    have been fitted in ``base``'s normalisation (``fit_head`` with its conds_mean and
    conds_std): its own rows, and the edit directions they give, stay as they are."""
    new = make_classifier(fits, base.conds_mean.double().numpy(), base.conds_std.double().numpy())
    clash = sorted(set(base.names) & set(new.names))
    if clash:
        raise InputError(f"the heads already have {', '.join(clash)}.")
    return Classifier(weight=torch.cat([base.weight.float(), new.weight]), bias=torch.cat([base.bias.float(), new.bias]),
                      conds_mean=base.conds_mean.float(), conds_std=base.conds_std.float(),
                      names=[*base.names, *new.names])


def save_classifier(folder: str | Path, classifier: Classifier, report: dict | None = None) -> Path:
    """Write ``classifier.safetensors`` (weight-set format: weight (A, D), bias (A,),
    conds_mean (1, D), conds_std (1, D)), ``attributes.json`` (row names) and, given a
    report, ``heads.json``. Files are written atomically; returns the safetensors path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLASSIFIER_FILE
    tensors = {k: v.detach().float().contiguous() for k, v in classifier.tensors().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "s3edit-weights", "names": ",".join(classifier.names)})
    write_json_atomic(folder / NAMES_FILE, list(classifier.names))
    if report is not None:
        write_json_atomic(folder / REPORT_FILE, report)
    return path


def resized(crops: np.ndarray, lms: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops (M, S, S, 3) and their crop landmarks (M, 68, 2) at ``size`` (INTER_AREA,
    as the training loader resizes)."""
    import cv2

    s = crops.shape[1]
    if s == size:
        return crops, lms
    out = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops]) if len(crops) \
        else np.zeros((0, size, size, crops.shape[3]), crops.dtype)
    return out, (lms + 0.5) * (size / s) - 0.5


def rows_without(portraits, rows: np.ndarray, classifier: Classifier, size: int, attribute: str = "Eyeglasses",
                 below: float = 0.5, identity=None) -> np.ndarray:
    """The ``rows`` of ``portraits`` whose ``attribute`` probability under
    ``classifier`` (heads on z_id of the crop at ``size``, as they were fitted) is
    below ``below``: e.g. the faces a head takes to wear no glasses, to draw glasses on."""
    if identity is None:
        from s3edit.face.dlib_resnet import TorchDlibIdentity

        identity = TorchDlibIdentity()
    if not len(rows):
        return rows
    crops, lms = resized(portraits.arrays["crops"][rows], portraits.arrays["landmarks"][rows], size)
    z = torch.from_numpy(embed_aligned(identity, crops, lms))
    p = torch.sigmoid(classifier.logits(z)[:, classifier.index(attribute)]).numpy()
    return rows[p < below]


def embed_aligned(identity, crops: np.ndarray, landmarks: np.ndarray, batch: int = 32,
                  on_batch=None) -> np.ndarray:
    """z_id (N, D) float32 of aligned crops (N, S, S, 3) uint8 RGB with their (N, 68, 2)
    crop-px landmarks, through ``identity.embed_crops`` (the call training losses use,
    e.g. ``TorchDlibIdentity``). ``on_batch(n)`` is called after each batch."""
    out = []
    for start in range(0, len(crops), batch):
        x = torch.from_numpy(np.ascontiguousarray(crops[start:start + batch])).permute(0, 3, 1, 2)
        x = x.float() / 127.5 - 1.0
        lm = torch.from_numpy(np.asarray(landmarks[start:start + batch], np.float32))
        with torch.inference_mode():
            out.append(identity.embed_crops(x, lm).float().cpu().numpy())
        if on_batch is not None:
            on_batch(len(x))
    dim = getattr(identity, "dim", 0)
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


# --- labels of ../shared/faces (faces.csv) ------------------------------------------------

YOUNG_AGE = 35  # Young = age < 35 (CelebA's "Young" is perceived; a round threshold here)
# Congress photos have a birth year but no photo date. Members born in or before this year
# are labelled not Young: sitting members are >= 25 and rarely photographed before 35
# and the directory's portraits are mostly of recent terms (a weak label; those born
# later are left out).
CONGRESS_NOT_YOUNG_BORN = 1975
# Faces that get synthetic glasses (positives) next to their own original (negatives).
# Congress is left out: many members wear real glasses, which would be false negatives.
GLASSES_SOURCES = ("london", "canada", "pixabay")
LABEL_RULES = {
    "Eyeglasses": "synthetic: each face of " + "/".join(GLASSES_SOURCES) + " (0) and the same crop "
                  "with drawn glasses of a random style (1); not real-labelled",
    "Sunglasses": "synthetic: the random-style twins of the Eyeglasses head with tinted lenses (1) against "
                  "their faces and the twins with clear lenses (0); not real-labelled",
    "Smiling": "real: faces.csv smiling yes/no (London neutral/smiling pairs)",
    "Male": "real: faces.csv gender male/female (london, canada, pixabay)",
    "Young": f"real: faces.csv age < {YOUNG_AGE} (london, canada); congress members born <= "
             f"{CONGRESS_NOT_YOUNG_BORN} as not young (weak: no photo date)",
}


def _int(value: str) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def csv_labels(items: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real labels from faces.csv records: name -> (rows (K,) int indices into
    ``items``, y (K,) 0/1) for Smiling, Male and Young (rules in ``LABEL_RULES``)."""
    labels: dict[str, tuple[list[int], list[int]]] = {"Smiling": ([], []), "Male": ([], []), "Young": ([], [])}

    def add(name: str, i: int, y: int) -> None:
        labels[name][0].append(i)
        labels[name][1].append(y)

    for i, item in enumerate(items):
        smiling, gender = item.get("smiling", ""), item.get("gender", "")
        if smiling in ("yes", "no"):
            add("Smiling", i, int(smiling == "yes"))
        if gender in ("male", "female"):
            add("Male", i, int(gender == "male"))
        age, born = _int(item.get("age")), _int(item.get("born"))
        if age is not None:
            add("Young", i, int(age < YOUNG_AGE))
        elif item.get("source") == "congress" and born is not None and born <= CONGRESS_NOT_YOUNG_BORN:
            add("Young", i, 0)
    return {k: (np.asarray(r, np.int64), np.asarray(y, np.float64)) for k, (r, y) in labels.items()}


def glasses_rows(items: list[dict], sources=GLASSES_SOURCES) -> np.ndarray:
    """(K,) indices of the faces that get a synthetic-glasses twin."""
    return np.array([i for i, item in enumerate(items) if item.get("source") in sources], np.int64)


def attach_classifier(weight_set: str | Path, classifier: Classifier) -> Path:
    """Put heads into an existing weight set folder: its classifier.safetensors and
    config.json "attributes" are replaced (atomically, one file at a time). The heads'
    D must equal the set's id_dim."""
    folder = Path(weight_set)
    config = read_config(folder)
    id_dim = int(config["model"].get("id_dim", 0))
    if classifier.weight.shape[1] != id_dim:
        raise WeightsError(f"the heads are {classifier.weight.shape[1]}-d but weight set {str(folder)!r} has "
                           f"{id_dim}-d identity codes; fit them in that set's z_id space.")
    save_classifier(folder, classifier)
    (folder / NAMES_FILE).unlink(missing_ok=True)  # the names live in config.json there
    config["attributes"] = list(classifier.names)
    write_json_atomic(folder / CONFIG_FILE, config)
    # the set's checksums.json must record the new heads, or loading it refuses them
    write_checksums(folder, [name for name in TENSOR_FILES if (folder / name).is_file()])
    return folder / CLASSIFIER_FILE


# --- the default model's heads from an aligned portrait dataset ---------------------------


# Heads whose weight is fitted orthogonal to other heads' (``fit_head``'s ``off``): a
# Sunglasses edit (along its head's row, DVA's rule) must not also carry an Eyeglasses
# edit, or the decoder's Eyeglasses drawing answers it on faces it has not seen.
ORTHOGONAL_TO = {"Sunglasses": ("Eyeglasses",)}


@dataclass
class PortraitHeadsConfig:
    """``seed`` (split, folds, glasses styles), ``test_fraction``, ``attributes`` (in
    row order; CelebA spelling)."""

    seed: int = 0
    test_fraction: float = TEST_FRACTION
    attributes: tuple[str, ...] = ("Eyeglasses", "Smiling", "Male", "Young", "Sunglasses")


def head_datasets(items: list[dict], z_real: np.ndarray, z_glasses: np.ndarray,
                  glasses_idx: np.ndarray, tinted: np.ndarray | None = None) -> dict[str, HeadData]:
    """HeadData per attribute. z_real (M, D) of every aligned face (``items`` order);
    z_glasses (K, D) of the synthetic-glasses twins of faces ``glasses_idx`` (K,);
    tinted (K,) bool: which twins wear sunglasses (``glasses.is_tinted`` of their
    style), for the Sunglasses head (none without it)."""
    person = np.array([str(it.get("person") or it.get("file")) for it in items])
    source = np.array([str(it.get("source", "")) for it in items])
    data = {}
    if len(glasses_idx):
        g = np.asarray(glasses_idx)
        data["Eyeglasses"] = HeadData(
            "Eyeglasses", np.concatenate([z_real[g], z_glasses]),
            np.concatenate([np.zeros(len(g)), np.ones(len(g))]),
            np.concatenate([person[g], person[g]]), np.concatenate([source[g], source[g]]))
        if tinted is not None and 0 < np.sum(tinted) < len(g):
            # Tinted against everything else the head sees near it: the plain faces and the
            # clear-lens twins, so that its direction is the tint, not glasses in general.
            tinted = np.asarray(tinted, bool)
            data["Sunglasses"] = HeadData(
                "Sunglasses", np.concatenate([z_real[g], z_glasses]),
                np.concatenate([np.zeros(len(g)), tinted.astype(np.float64)]),
                np.concatenate([person[g], person[g]]), np.concatenate([source[g], source[g]]))
    for name, (rows, y) in csv_labels(items).items():
        if len(rows) and len(np.unique(y)) == 2:
            data[name] = HeadData(name, z_real[rows], y, person[rows], source[rows])
    return data


def share_positive(classifier: Classifier, z: np.ndarray, sources: np.ndarray) -> dict[str, dict[str, float]]:
    """Share of faces each head calls positive, per source: {attr: {source: share}}
    (pseudo-labels of the real photos, a check where no label exists)."""
    logits = classifier.logits(torch.as_tensor(z, dtype=torch.float32)).numpy()
    return {name: {str(s): float(np.mean(logits[sources == s, a] > 0)) for s in np.unique(sources)}
            for a, name in enumerate(classifier.names)}
