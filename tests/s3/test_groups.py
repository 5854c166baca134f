"""Face-region landmark groups (s3edit.s3.groups)."""

from __future__ import annotations

import torch

from s3edit.s3.groups import (
    FACE_REGIONS,
    INNER_POINTS,
    LND_DIM,
    MOUTH,
    REGION_LND_COLUMNS,
    RIGHT_BROW,
    landmark_groups,
)
from s3edit.s3.routing import ClusterTransforms


def test_regions_partition_the_51_inner_points():
    points = [p for region in FACE_REGIONS.values() for p in region]
    assert len(FACE_REGIONS) == 7
    assert sorted(points) == list(range(17, 68)) and len(points) == INNER_POINTS == 51


def test_region_columns_cover_z_lnd_once_in_order():
    cols = [c for region in REGION_LND_COLUMNS.values() for c in region]
    assert cols == list(range(LND_DIM)) and LND_DIM == 102
    assert REGION_LND_COLUMNS["right_brow"] == tuple(range(10))
    assert REGION_LND_COLUMNS["mouth"] == tuple(range(62, 102))
    assert len(RIGHT_BROW) == 5 and len(MOUTH) == 20


def test_landmark_groups_are_first_layer_landmark_columns():
    transforms = ClusterTransforms(k=3, id_dim=16, face_dim=8, hidden=12)
    groups = landmark_groups(transforms)
    assert len(groups) == 7 * 3
    assert groups[7].name == "T1/right_brow" and groups[20].name == "T2/mouth"
    assert groups[7].param is transforms.first_layer(1).weight
    for k in range(3):
        cols = sorted(c for g in groups[7 * k : 7 * k + 7] for c in g.columns)
        assert cols == list(transforms.landmark_columns) == list(range(16, 118))


def test_zeroed_region_makes_transform_blind_to_that_region():
    transforms = ClusterTransforms(k=2, id_dim=16, face_dim=8, hidden=12)
    with torch.no_grad():
        for mlp in transforms.transforms:
            mlp[2].weight.normal_()  # a "tuned" T_k
    mouth = next(g for g in landmark_groups(transforms) if g.name == "T1/mouth")
    with torch.no_grad():
        mouth.param[:, list(mouth.columns)] = 0.0
    z_id, lnd = torch.randn(4, 16), torch.rand(4, 102)
    moved = lnd.clone()
    moved[:, list(REGION_LND_COLUMNS["mouth"])] += 0.2  # move only the mouth points
    assert torch.equal(transforms(z_id, lnd, 1), transforms(z_id, moved, 1))
    assert not torch.equal(transforms(z_id, lnd, 0), transforms(z_id, moved, 0))


def test_dhspg_zeroes_exactly_q_region_groups_of_the_transforms():
    from s3edit.s3.dhspg import DHSPG, DHSPGConfig

    torch.manual_seed(0)
    transforms = ClusterTransforms(k=2, id_dim=16, face_dim=8, hidden=16)
    groups = landmark_groups(transforms)
    opt = DHSPG(transforms.parameters(), groups,
                DHSPGConfig(base="adam", lr=1e-2, q=0.1, warmup_steps=20, sparsify_steps=30))
    assert opt.num_sparse == 1  # ⌊0.1 · 14⌋
    g = torch.Generator().manual_seed(1)
    z_id, lnd = torch.randn(64, 16, generator=g), torch.rand(64, 102, generator=g)
    cluster = torch.arange(64) % 2
    target = torch.tanh(z_id[:, :8] + lnd[:, 62:70])  # depends on identity and the mouth

    def loss():
        return torch.nn.functional.mse_loss(transforms(z_id, lnd, cluster), target)

    start = float(loss().detach())
    for _ in range(60):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.5 * start
    (zeroed,) = opt.zero_groups()
    group = groups[zeroed]
    assert bool((group.param[:, list(group.columns)] == 0).all())
    k, region = int(group.name[1]), group.name.split("/")[1]
    moved = lnd.clone()
    moved[:, list(REGION_LND_COLUMNS[region])] += 0.3
    with torch.no_grad():
        assert torch.equal(transforms(z_id, lnd, k), transforms(z_id, moved, k))
