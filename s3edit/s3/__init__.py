"""S3Editor on top of DVA (docs/s3editor.md): attribute routing and cluster transforms
(``routing``), face-region neuron groups (``groups``), the group-sparse optimizer
(``dhspg``)."""

from s3edit.s3.dhspg import DHSPG, DHSPGConfig, Group, LambdaSearch, num_sparse_groups
from s3edit.s3.groups import FACE_REGIONS, REGION_LND_COLUMNS, landmark_groups
from s3edit.s3.routing import (
    AttributeClusters,
    ClusterTransforms,
    PseudoEdit,
    attribute_embeddings,
    cluster_attributes,
    face_code,
    pseudo_edit,
    sample_edit_draws,
)

__all__ = [
    "DHSPG",
    "DHSPGConfig",
    "Group",
    "LambdaSearch",
    "num_sparse_groups",
    "FACE_REGIONS",
    "REGION_LND_COLUMNS",
    "landmark_groups",
    "AttributeClusters",
    "ClusterTransforms",
    "PseudoEdit",
    "attribute_embeddings",
    "cluster_attributes",
    "face_code",
    "pseudo_edit",
    "sample_edit_draws",
]
