"""Face-region groups of the landmark-carrying neurons of every T_k (S3Editor's structured
sparsity, Wang et al., 2024; docs/s3editor.md).

z_lnd is DVA's landmark code: the 68-point (iBUG 300-W) landmarks with the 17 jaw points
0..16 dropped, i.e. the 51 inner points 17..67, flattened point by point as
(x, y) pairs: inner point p (68-point index) sits at z_lnd columns 2·(p-17) and
2·(p-17)+1 (DVA's LNDnet: ``reshape(-1, 68, 2)[:, 17:, :]`` then flatten).

The 51 points split into 7 face regions ("right"/"left" are the subject's, iBUG
convention: the right brow/eye appear on the image's left in a frontal view):

| region        | 68-pt indices | points | z_lnd columns |
|---------------|---------------|--------|---------------|
| right_brow    | 17..21        |   5    |   0..9        |
| left_brow     | 22..26        |   5    |  10..19       |
| nose_bridge   | 27..30        |   4    |  20..27       |
| lower_nose    | 31..35        |   5    |  28..37       |
| right_eye     | 36..41        |   6    |  38..49       |
| left_eye      | 42..47        |   6    |  50..61       |
| mouth         | 48..67        |  20    |  62..101      |

In T_k's first-layer weight ``(H, D + 102)`` a region's group is those z_lnd columns
shifted by D (= id_dim, the z_id part of the input comes first), so |G| = 7·K.
"""

from __future__ import annotations

from s3edit.s3.dhspg import Group
from s3edit.s3.routing import ClusterTransforms

JAW_POINTS = 17  # 68-point indices 0..16, dropped by DVA's LNDnet
RIGHT_BROW = tuple(range(17, 22))
LEFT_BROW = tuple(range(22, 27))
NOSE_BRIDGE = tuple(range(27, 31))
LOWER_NOSE = tuple(range(31, 36))
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
MOUTH = tuple(range(48, 68))  # outer lip 48..59 + inner lip 60..67

# The 7 regions in z_lnd order; their union is exactly 17..67.
FACE_REGIONS: dict[str, tuple[int, ...]] = {
    "right_brow": RIGHT_BROW,
    "left_brow": LEFT_BROW,
    "nose_bridge": NOSE_BRIDGE,
    "lower_nose": LOWER_NOSE,
    "right_eye": RIGHT_EYE,
    "left_eye": LEFT_EYE,
    "mouth": MOUTH,
}
INNER_POINTS = sum(len(p) for p in FACE_REGIONS.values())  # 51
LND_DIM = 2 * INNER_POINTS  # 102 = s3edit.model.config.LND_DIM


def lnd_columns(points: tuple[int, ...]) -> tuple[int, ...]:
    """z_lnd columns (x then y per point) of 68-point indices ``points`` (each in 17..67)."""
    return tuple(c for p in points for c in (2 * (p - JAW_POINTS), 2 * (p - JAW_POINTS) + 1))


# Region -> its z_lnd columns, e.g. REGION_LND_COLUMNS["right_brow"] == (0, 1, ..., 9).
REGION_LND_COLUMNS: dict[str, tuple[int, ...]] = {
    name: lnd_columns(points) for name, points in FACE_REGIONS.items()
}


def landmark_groups(transforms: ClusterTransforms) -> list[Group]:
    """The 7·K neuron groups: for each T_k (k = 0..K-1, outer loop) and each region (in
    ``FACE_REGIONS`` order), the region's landmark columns of T_k's first-layer weight.
    Group names read ``"T{k}/{region}"``; group index = 7·k + region index."""
    offset = transforms.id_dim
    return [
        Group(
            param=transforms.first_layer(k).weight,
            columns=tuple(offset + c for c in cols),
            name=f"T{k}/{region}",
        )
        for k in range(transforms.k)
        for region, cols in REGION_LND_COLUMNS.items()
    ]
