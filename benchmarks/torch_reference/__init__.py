"""A plain-torch port (no DGL) of the public RecGOAT implementation, as
../shared/design/REFERENCE.md describes it; used by the benchmarks to time the reference.

Parameter names equal the public code's state_dict keys (`lgn_mm`: cf.*, txt_branch.*,
img_branch.*, fuse.*; `lgn`: embedding_user/item.weight).
"""

from .data import ReferenceData, build_model
from .gat import GATConv, ItemGCN, edge_softmax
from .graph import add_self_loops, item_knn_graph, normalized_adjacency
from .losses import bpr_loss, info_nce, l2_reg, reference_contrastive
from .model import LightGCN, MultiModalLightGCN, ReferenceConfig
from .oat import OATFusion, dimension_cost, oat_align, sinkhorn_plan
from .train import evaluate, make_optimizer, train_epoch

__all__ = [
    "ReferenceData", "build_model", "GATConv", "ItemGCN", "edge_softmax", "add_self_loops",
    "item_knn_graph", "normalized_adjacency", "bpr_loss", "info_nce", "l2_reg",
    "reference_contrastive", "LightGCN", "MultiModalLightGCN", "ReferenceConfig", "OATFusion",
    "dimension_cost", "oat_align", "sinkhorn_plan", "evaluate", "make_optimizer", "train_epoch",
]
