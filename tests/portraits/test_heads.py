"""Attribute heads: logistic regression on normalised z_id, held-out people, the
weight-set classifier format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.optimize import approx_fprime

from s3edit.portraits.heads import (
    HeadData, LABEL_RULES, ORTHOGONAL_TO, accuracy, append_heads, attach_classifier, csv_labels, embed_aligned, fit_head,
    fit_logistic, glasses_rows, group_split, head_datasets, make_classifier, normalisation,
    save_classifier, share_positive,
)
from s3edit.errors import InputError, WeightsError
from s3edit.weights.weightset import CLASSIFIER_FILE, FORMAT, VERSION, load_classifier, read_config
from s3edit.model.attributes import edit_direction

D = 16


def separable(n: int = 400, seed: int = 0):
    """z (n, D) with a per-dimension offset and scale, labels from a known direction of
    the *normalised* space, persons of two photos each."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 3.0, D)
    offset = rng.normal(0, 5, D)
    x = rng.normal(size=(n, D))
    w_true = rng.normal(size=D)
    w_true /= np.linalg.norm(w_true)
    y = (x @ w_true + 0.3 > 0).astype(float)
    z = x * scale + offset
    groups = np.repeat(np.arange(n // 2), 2)
    return z, y, groups, w_true


def test_head_recovers_the_direction_of_a_separable_set():
    z, y, groups, w_true = separable()
    mean, std = normalisation(z)
    fit = fit_head(HeadData("Smiling", z, y, groups, np.array(["a"] * len(y))), mean, std)
    cos = fit.weight @ w_true / np.linalg.norm(fit.weight)
    assert cos > 0.95
    assert fit.test_accuracy > 0.93 and fit.train_accuracy > 0.95
    assert fit.n_train + fit.n_test == len(y) and fit.n_positive == int(y.sum())
    assert set(fit.test_by_source) == {"a"}
    # as an edit direction: the s3edit routing helper sees the same direction
    classifier = make_classifier([fit], mean, std)
    direction = edit_direction(classifier.weight[0]).double().numpy()
    assert direction @ w_true > 0.95
    # logits from the classifier format equal the fit's own
    logits = classifier.logits(torch.as_tensor(z, dtype=torch.float32))[:, 0].numpy()
    np.testing.assert_allclose(logits, ((z - mean) / std) @ fit.weight + fit.bias, rtol=1e-4, atol=1e-4)


def test_head_fitted_off_other_rows_is_orthogonal_to_them_and_keeps_the_rest():
    """``fit_head(off=...)``: the weight has no component along the given rows (the
    Sunglasses head off the Eyeglasses row, ORTHOGONAL_TO) and still finds the part of
    the label's direction orthogonal to them."""
    z, y, groups, w_true = separable()
    mean, std = normalisation(z)
    rng = np.random.default_rng(1)
    other = 0.6 * w_true + 0.8 * rng.normal(size=D) / np.sqrt(D)  # a row that shares part of it
    fit = fit_head(HeadData("Sunglasses", z, y, groups, np.array(["a"] * len(y))), mean, std, off=other[None])
    assert abs(fit.weight @ other) < 1e-8 * np.linalg.norm(fit.weight) * np.linalg.norm(other)
    rest = w_true - other * (other @ w_true) / (other @ other)
    assert fit.weight @ rest / np.linalg.norm(fit.weight) / np.linalg.norm(rest) > 0.9
    assert "Sunglasses" in ORTHOGONAL_TO and ORTHOGONAL_TO["Sunglasses"] == ("Eyeglasses",)


def test_logistic_gradient_is_exact():
    """fit_logistic's optimum has zero gradient of the objective it states (checked by
    finite differences on the loss alone)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + rng.normal(0, 1, 60) > 0.5).astype(float)
    l2 = 0.1
    w, b = fit_logistic(x, y, l2)
    c = np.where(y > 0.5, 0.5 / y.mean(), 0.5 / (1 - y.mean()))

    def objective(theta):
        m = (2 * y - 1) * (x @ theta[:3] + theta[3])
        return np.mean(c * np.logaddexp(0, -m)) + 0.5 * l2 * theta[:3] @ theta[:3]

    grad = approx_fprime(np.r_[w, b], objective, 1e-7)
    assert np.abs(grad).max() < 1e-5


def test_balanced_weights_handle_a_skewed_set():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(900, 2))
    y = np.r_[np.zeros(800), np.ones(100)]
    x[y == 1, 0] += 2.0
    w, b = fit_logistic(x, y, 1e-3)
    acc, bal = accuracy(x, y, w, b)
    assert bal > 0.8  # the minority class is found, not given up for the 89 % baseline


def test_group_split_keeps_people_together():
    groups = np.repeat(np.arange(50), 3)
    test = group_split(groups, 0.2, seed=0)
    assert test.sum() == 30
    for g in range(50):
        assert len(set(test[groups == g])) == 1
    assert not np.array_equal(test, group_split(groups, 0.2, seed=1))


def test_fit_head_needs_both_classes():
    with pytest.raises(ValueError, match="needs examples of both classes"):
        HeadData("Male", np.zeros((4, D)), np.ones(4), np.arange(4), np.array(["a"] * 4))


def test_classifier_round_trips_through_the_weight_set_loader(tmp_path):
    z, y, groups, _ = separable()
    mean, std = normalisation(z)
    fits = [fit_head(HeadData(n, z, y if i == 0 else 1 - y, groups, np.array(["a"] * len(y))), mean, std)
            for i, n in enumerate(["Eyeglasses", "Smiling"])]
    classifier = make_classifier(fits, mean, std)
    path = save_classifier(tmp_path, classifier, {"heads": [f.summary() for f in fits]})
    assert path == tmp_path / CLASSIFIER_FILE
    names = json.loads((tmp_path / "attributes.json").read_text())
    assert names == ["Eyeglasses", "Smiling"]
    loaded = load_classifier(path, names, D)
    for key in ("weight", "bias", "conds_mean", "conds_std"):
        torch.testing.assert_close(getattr(loaded, key), getattr(classifier, key))
    assert loaded.conds_mean.shape == (1, D) and loaded.weight.shape == (2, D)
    report = json.loads((tmp_path / "heads.json").read_text())
    assert report["heads"][0]["name"] == "Eyeglasses" and "weight" not in report["heads"][0]


def test_append_heads_keeps_the_base_rows_and_normalisation():
    """A head added to a set (fit_heads.py --add-to) is fitted in the set's normalisation
    and appended; the set's own rows, and so its edit directions, do not move."""
    z, y, groups, _ = separable()
    mean, std = normalisation(z)
    src = np.array(["a"] * len(y))
    base = make_classifier([fit_head(HeadData("Eyeglasses", z, y, groups, src), mean, std)], mean, std)
    new = fit_head(HeadData("Sunglasses", z, 1 - y, groups, src), mean, std)
    both = append_heads(base, [new])
    assert both.names == ["Eyeglasses", "Sunglasses"]
    torch.testing.assert_close(both.weight[:1], base.weight)
    torch.testing.assert_close(both.conds_mean, base.conds_mean)
    torch.testing.assert_close(both.weight[1], torch.as_tensor(new.weight, dtype=torch.float32))
    zt = torch.as_tensor(z, dtype=torch.float32)
    assert ((both.logits(zt)[:, 1] > 0).numpy() == (y == 0)).mean() > 0.9  # the new head works in it
    with pytest.raises(InputError, match="the heads already have Eyeglasses"):
        append_heads(both, [fit_head(HeadData("Eyeglasses", z, y, groups, src), mean, std)])


def test_attach_classifier_into_a_weight_set(tmp_path):
    z, y, groups, _ = separable()
    mean, std = normalisation(z)
    classifier = make_classifier([fit_head(HeadData("Young", z, y, groups, np.array(["a"] * len(y))),
                                           mean, std)], mean, std)
    folder = tmp_path / "set"
    folder.mkdir()
    config = {"format": FORMAT, "version": VERSION, "name": "x", "model": {"id_dim": D}, "attributes": []}
    (folder / "config.json").write_text(json.dumps(config))
    attach_classifier(folder, classifier)
    assert read_config(folder)["attributes"] == ["Young"]
    assert load_classifier(folder / CLASSIFIER_FILE, ["Young"], D).weight.shape == (1, D)
    sums = json.loads((folder / "checksums.json").read_text())  # the set's checksums record the new heads
    assert CLASSIFIER_FILE in json.dumps(sums)
    config["model"]["id_dim"] = 512
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="heads are 16-d but weight set .* has 512-d identity codes"):
        attach_classifier(folder, classifier)


ITEMS = [
    {"source": "london", "person": "l1", "gender": "female", "age": "24", "born": "", "smiling": "no"},
    {"source": "london", "person": "l1", "gender": "female", "age": "24", "born": "", "smiling": "yes"},
    {"source": "canada", "person": "c1", "gender": "male", "age": "40", "born": "", "smiling": ""},
    {"source": "pixabay", "person": "p1", "gender": "male", "age": "", "born": "", "smiling": ""},
    {"source": "congress", "person": "g1", "gender": "", "age": "", "born": "1950", "smiling": ""},
    {"source": "congress", "person": "g2", "gender": "", "age": "", "born": "1985", "smiling": ""},
    {"source": "london", "person": "l2", "gender": "male", "age": "NA", "born": "", "smiling": "no"},
]


def test_label_rules_of_faces_csv():
    labels = csv_labels(ITEMS)
    rows, y = labels["Smiling"]
    assert rows.tolist() == [0, 1, 6] and y.tolist() == [0, 1, 0]
    rows, y = labels["Male"]
    assert rows.tolist() == [0, 1, 2, 3, 6] and y.tolist() == [0, 0, 1, 1, 1]
    rows, y = labels["Young"]  # age < 35; congress born <= 1975 not young; born 1985 / 'NA' unlabelled
    assert rows.tolist() == [0, 1, 2, 4] and y.tolist() == [1, 1, 0, 0]
    assert glasses_rows(ITEMS).tolist() == [0, 1, 2, 3, 6]
    assert set(LABEL_RULES) == {"Eyeglasses", "Smiling", "Male", "Young", "Sunglasses"}


def test_head_datasets_pair_faces_with_their_glasses_twins():
    rng = np.random.default_rng(0)
    z_real = rng.normal(size=(len(ITEMS), D))
    g = glasses_rows(ITEMS)
    z_glasses = rng.normal(size=(len(g), D))
    data = head_datasets(ITEMS, z_real, z_glasses, g)
    eg = data["Eyeglasses"]
    assert eg.y.tolist() == [0] * len(g) + [1] * len(g)
    assert eg.groups.tolist() == ["l1", "l1", "c1", "p1", "l2"] * 2  # twin with its face
    np.testing.assert_array_equal(eg.z[len(g):], z_glasses)
    assert set(data) == {"Eyeglasses", "Smiling", "Male", "Young"}  # no Sunglasses without the tints
    tinted = np.array([True, False, False, True, False])
    sun = head_datasets(ITEMS, z_real, z_glasses, g, tinted)["Sunglasses"]
    # tinted twins against their faces and the clear-lens twins
    assert sun.y.tolist() == [0] * len(g) + [1, 0, 0, 1, 0]
    assert sun.groups.tolist() == eg.groups.tolist()
    np.testing.assert_array_equal(sun.z, eg.z)
    classifier = make_classifier([fit_head(data["Male"], *normalisation(z_real), test_fraction=0.5)],
                                 *normalisation(z_real))
    shares = share_positive(classifier, z_real, np.array([i["source"] for i in ITEMS]))
    assert set(shares["Male"]) == {"london", "canada", "pixabay", "congress"}


def test_embed_aligned_batches_through_the_identity_net():
    class Fake:
        dim = 4

        def embed_crops(self, crops, landmarks):
            assert crops.shape[1:] == (3, 8, 8) and float(crops.min()) >= -1
            return torch.nn.functional.normalize(
                torch.cat([crops.mean((1, 2, 3))[:, None], landmarks[:, :3, 0]], 1), dim=1)

    crops = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    lms = np.random.default_rng(1).normal(size=(5, 68, 2)).astype(np.float32)
    seen = []
    z = embed_aligned(Fake(), crops, lms, batch=2, on_batch=seen.append)
    assert z.shape == (5, 4) and seen == [2, 2, 1]
    whole = embed_aligned(Fake(), crops, lms, batch=5)
    np.testing.assert_allclose(z, whole, atol=1e-6)


def test_rows_without_keeps_the_faces_the_head_rates_below_the_threshold():
    """An identity whose first entry is the crop's brightness and a head that reads it:
    the bright crops count as wearing the attribute and are dropped."""
    from types import SimpleNamespace

    from s3edit.portraits.heads import rows_without
    from s3edit.model.attributes import Classifier

    class Brightness:
        dim = 2

        def embed_crops(self, crops, landmarks):
            assert crops.shape[-1] == 16  # resized to the head's size first
            return torch.stack([crops.mean((1, 2, 3)), torch.ones(len(crops))], 1)

    levels = np.array([10, 240, 30, 220, 250], np.uint8)
    crops = np.broadcast_to(levels[:, None, None, None], (5, 32, 32, 3)).copy()
    portraits = SimpleNamespace(arrays={"crops": crops, "landmarks": np.zeros((5, 68, 2), np.float32)})
    head = Classifier(torch.tensor([[10.0, 0.0]]), torch.zeros(1), torch.zeros(1, 2), torch.ones(1, 2), ["Eyeglasses"])
    kept = rows_without(portraits, np.array([0, 1, 2, 3]), head, 16, identity=Brightness())
    assert kept.tolist() == [0, 2]  # row 4 was not a candidate
    assert rows_without(portraits, np.array([], np.int64), head, 16, identity=Brightness()).tolist() == []
