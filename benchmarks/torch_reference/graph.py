"""Graph construction of the public RecGOAT code, in plain torch (no DGL, no scipy).

* `normalized_adjacency`: the LightGCN user-item graph D^-1/2 A D^-1/2 as a coalesced
  `torch.sparse_coo_tensor` over U + I nodes (item node = U + item id).
* `item_knn_graph`: a modality's item-item kNN graph, built as the reference does (full I x I
  cosine similarity, diagonal zeroed, `torch.topk`, symmetrised, duplicates removed).
* `add_self_loops`: what `dgl.add_self_loop` does before every GAT forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalized_adjacency(train_users: torch.Tensor, train_items: torch.Tensor,
                         n_users: int, n_items: int) -> torch.Tensor:
    """Symmetric-normalised bipartite adjacency from the UNIQUE training pairs.

    Args:
      train_users, train_items: [N] int64 training pairs (duplicates allowed, counted once).
      n_users, n_items: U and I.
    Returns:
      [U+I, U+I] float32 sparse COO tensor, coalesced; A_hat[r, c] = 1 / sqrt(deg r * deg c) for
      every edge; zero-degree nodes have no entries.
    """
    if train_users.shape != train_items.shape or train_users.ndim != 1:
        raise ValueError(f"train_users {tuple(train_users.shape)} and train_items "
                         f"{tuple(train_items.shape)} must be equal-length 1-d arrays")
    n_nodes = n_users + n_items
    pairs = torch.unique(torch.stack([train_users.long(), train_items.long()], 1), dim=0)
    user_nodes, item_nodes = pairs[:, 0], pairs[:, 1] + n_users
    rows = torch.cat([user_nodes, item_nodes])
    cols = torch.cat([item_nodes, user_nodes])
    degree = torch.bincount(rows, minlength=n_nodes).to(torch.float32)
    inv_sqrt_degree = torch.where(degree > 0, degree.clamp(min=1).pow(-0.5), torch.zeros_like(degree))
    values = inv_sqrt_degree[rows] * inv_sqrt_degree[cols]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n_nodes, n_nodes),
                                   check_invariants=False).coalesce()


def item_knn_graph(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's item kNN graph of one modality (before self-loops).

    Args:
      features: [I, f] raw item features of the modality.
      k: neighbours per item (`item_knn_k`).
    Returns:
      (src, dst): [E] int64 each, messages flow src -> dst, unique edges sorted by (src, dst)
      (the order `dgl.to_simple` yields). The I x I similarity is materialised, as in the reference.
    """
    n_items = features.shape[0]
    if not 0 < k < n_items:
        raise ValueError(f"item_knn_k must be in 1..{n_items - 1} for {n_items} items, got {k}")
    unit_rows = F.normalize(features.float(), dim=-1)
    similarity = unit_rows @ unit_rows.t()                      # [I, I]
    similarity.fill_diagonal_(0)
    _, neighbours = torch.topk(similarity, k=k, dim=1)           # [I, k]
    src = torch.arange(n_items, device=features.device).unsqueeze(1).expand(-1, k).reshape(-1)
    dst = neighbours.reshape(-1)
    # symmetrise, then drop duplicate edges (as dgl.to_simple, which also sorts by (src, dst))
    edge_keys = torch.unique(torch.cat([src * n_items + dst, dst * n_items + src]))
    return edge_keys // n_items, edge_keys % n_items


def add_self_loops(src: torch.Tensor, dst: torch.Tensor,
                   n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one self-loop per node after the existing edges (as `dgl.add_self_loop`).

    Args:
      src, dst: [E] int64 edges.
    Returns:
      (src, dst): [E + n_nodes] int64.
    """
    loops = torch.arange(n_nodes, device=src.device)
    return torch.cat([src, loops]), torch.cat([dst, loops])
