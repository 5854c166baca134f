"""Routing, cluster transforms and DVA's edit rule (s3edit.s3.routing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s3edit.errors import S3EditError
from s3edit.model.attributes import denormalize, edit_direction, edit_identity, normalize
from s3edit.s3.routing import (
    AttributeClusters,
    ClusterTransforms,
    _fill_empty_clusters,
    attribute_embeddings,
    cluster_attributes,
    face_code,
    pseudo_edit,
    sample_edit_draws,
)

D, LND, FACE = 32, 102, 24  # small widths; the code is width-agnostic
NAMES = [f"attr{i}" for i in range(40)]


@pytest.fixture
def classifier() -> torch.Tensor:
    return torch.randn(40, D, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def stats() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return 0.1 * torch.randn(1, D, generator=g), 0.5 + torch.rand(1, D, generator=g)


@pytest.fixture
def fuse():
    lin = torch.nn.Linear(D + LND, FACE)
    return lambda z_id, z_lnd: lin(torch.cat([z_id, z_lnd], dim=-1))


def test_embeddings_are_unit_rows(classifier):
    emb = attribute_embeddings(classifier)
    assert emb.shape == (40, D)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(40))
    torch.testing.assert_close(edit_direction(classifier[3]), emb[3])


def test_clustering_is_seeded_and_canonical(classifier):
    emb = attribute_embeddings(classifier)
    a = cluster_attributes(emb, NAMES, k=5, seed=7)
    b = cluster_attributes(emb, NAMES, k=5, seed=7)
    assert torch.equal(a.labels, b.labels)
    assert a.k == 5 and a.centroids.shape == (5, D)
    counts = torch.bincount(a.labels, minlength=5)
    assert bool((counts > 0).all())
    firsts = [a.labels.tolist().index(k) for k in range(5)]
    assert firsts == sorted(firsts) and a.labels[0] == 0  # numbered by first member
    assert sum(len(a.members(k)) for k in range(5)) == 40


def test_k_larger_than_attribute_count_gives_one_cluster_each(classifier):
    emb = attribute_embeddings(classifier[:3])
    result = cluster_attributes(emb, NAMES[:3], k=5)
    assert result.k == 3
    assert result.labels.tolist() == [0, 1, 2]


def test_duplicate_embeddings_still_fill_every_cluster():
    two = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), dim=1)
    emb = two[[0, 0, 0, 1, 1, 1]]
    result = cluster_attributes(emb, [f"a{i}" for i in range(6)], k=4, seed=0)
    assert result.k == 4
    assert bool((torch.bincount(result.labels, minlength=4) > 0).all())


def test_fill_empty_clusters_moves_the_farthest_point():
    data = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [9.0, 9.0]])
    labels = np.array([0, 0, 0, 1])  # cluster 2 empty
    fixed = _fill_empty_clusters(data, labels, k=3)
    assert fixed.tolist() == [0, 0, 2, 1]  # point 2 is farthest from cluster 0's mean


def test_route_known_and_unseen(classifier):
    emb = attribute_embeddings(classifier)
    clusters = cluster_attributes(emb, NAMES, k=5, seed=0)
    for j in range(40):
        assert clusters.route(emb[j]) == int(clusters.labels[j])
        assert clusters.route(3.0 * emb[j]) == int(clusters.labels[j])  # scale-free
        assert clusters.route_name(NAMES[j]) == int(clusters.labels[j])
    unseen = torch.randn(D, generator=torch.Generator().manual_seed(9))
    expected = int(torch.argmax(clusters.centroids @ F.normalize(unseen, dim=0)))
    assert clusters.route(unseen) == expected


def test_user_attribute_routes_to_nearest_centroid(classifier):
    clusters = cluster_attributes(attribute_embeddings(classifier), NAMES, k=5, seed=0)
    noise = torch.randn(D, generator=torch.Generator().manual_seed(3))
    direction = clusters.centroids[3] + 0.01 * noise
    bigger = clusters.with_attribute("Freckles", direction)
    assert bigger.route_name("Freckles") == 3
    assert torch.equal(bigger.labels[:40], clusters.labels)
    with pytest.raises(S3EditError, match="already exists"):
        bigger.with_attribute("Freckles", direction)


def test_unknown_attribute_name_message(classifier):
    clusters = cluster_attributes(attribute_embeddings(classifier), NAMES, k=5)
    with pytest.raises(S3EditError, match=r"Unknown attribute 'Smile': use one of attr0, "):
        clusters.route_name("Smile")


def test_clusters_round_trip_through_labels(classifier):
    emb = attribute_embeddings(classifier)
    clusters = cluster_attributes(emb, NAMES, k=5, seed=3)
    record = clusters.to_dict()
    again = AttributeClusters.from_labels(emb, record["names"], record["labels"], record["k"])
    assert torch.equal(again.labels, clusters.labels)
    torch.testing.assert_close(again.centroids, clusters.centroids)


def test_normalize_round_trip(stats):
    mean, std = stats
    z = torch.randn(4, D)
    torch.testing.assert_close(denormalize(normalize(z, mean, std), mean, std), z)


def test_edit_identity_matches_dva_rule(classifier, stats):
    mean, std = stats
    z = F.normalize(torch.randn(3, D), dim=1)
    w = classifier[5]
    out = edit_identity(z, edit_direction(w), 0.3, mean, std)
    by_hand = (z - mean) / std + 0.3 * math.sqrt(D) * w / w.norm()
    by_hand = by_hand * std + mean
    torch.testing.assert_close(out, by_hand / by_hand.norm(dim=1, keepdim=True))
    # The attribute logit (on normalised codes, before l2norm) rises by s·√D·‖w‖.
    moved = normalize(z, mean, std) + 0.3 * math.sqrt(D) * edit_direction(w)
    gain = moved @ w - normalize(z, mean, std) @ w
    torch.testing.assert_close(gain, torch.full((3,), 0.3 * math.sqrt(D) * float(w.norm())))


def test_untuned_transforms_edit_exactly_like_dva(fuse):
    transforms = ClusterTransforms(k=3, id_dim=D, lnd_dim=LND, face_dim=FACE, hidden=16)
    z_id, z_lnd = torch.randn(6, D), torch.rand(6, LND)
    plain = fuse(z_id, z_lnd)
    assert torch.equal(face_code(fuse, transforms, z_id, z_lnd, 1), plain)
    per_sample = torch.tensor([0, 2, 1, 1, 0, 2])
    assert torch.equal(face_code(fuse, transforms, z_id, z_lnd, per_sample), plain)


def test_per_sample_routing_uses_each_transform(fuse):
    transforms = ClusterTransforms(k=2, id_dim=D, lnd_dim=LND, face_dim=FACE, hidden=16)
    with torch.no_grad():
        transforms.transforms[1][2].bias.fill_(1.0)  # only T_1 is non-zero
    z_id, z_lnd = torch.randn(4, D), torch.rand(4, LND)
    residual = transforms(z_id, z_lnd, torch.tensor([0, 1, 0, 1]))
    assert torch.equal(residual[[0, 2]], torch.zeros(2, FACE))
    assert torch.equal(residual[[1, 3]], torch.ones(2, FACE))


def test_pseudo_edit_routes_and_moves_identity(classifier, stats, fuse):
    mean, std = stats
    clusters = cluster_attributes(attribute_embeddings(classifier), NAMES, k=5, seed=0)
    transforms = ClusterTransforms(k=5, id_dim=D, lnd_dim=LND, face_dim=FACE, hidden=16)
    z_id, z_lnd = F.normalize(torch.randn(8, D), dim=1), torch.rand(8, LND)
    attr, gamma = sample_edit_draws(8, 40, torch.Generator().manual_seed(4))
    assert attr.shape == gamma.shape == (8,) and bool(((gamma >= 0) & (gamma < 1)).all())
    out = pseudo_edit(z_id, z_lnd, attr, gamma, clusters=clusters, transforms=transforms,
                      fuse=fuse, conds_mean=mean, conds_std=std)
    assert torch.equal(out.cluster, clusters.labels[attr])
    expected = edit_identity(z_id, clusters.embeddings[attr], gamma, mean, std)
    assert torch.equal(out.z_id, expected)
    assert torch.equal(out.z_face, fuse(expected, z_lnd))  # untuned: plain DVA
    still = pseudo_edit(z_id, z_lnd, attr, torch.zeros(8), clusters=clusters,
                        transforms=transforms, fuse=fuse, conds_mean=mean, conds_std=std)
    torch.testing.assert_close(still.z_id, z_id)  # γ = 0: no edit
