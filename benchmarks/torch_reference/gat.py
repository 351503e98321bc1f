"""DGL's `GATConv` and the reference's item branch (`ItemGCN`), in plain torch.

Edge softmax and message passing use scatter ops (`scatter_reduce` amax, `index_add`) over an
edge list (src -> dst), which is what DGL's kernels compute. Parameter names and shapes are
DGL's (`fc.weight`, `attn_l`, `attn_r`, `bias`) so that the reference's state_dict loads.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .graph import add_self_loops


def edge_softmax(scores: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Softmax of edge scores over the incoming edges of each destination node.

    Args:
      scores: [E, H, 1] edge logits.
      dst: [E] int64 destination node of each edge.
      n_nodes: number of nodes N.
    Returns:
      [E, H, 1] attention weights; for each node and head they sum to 1 over its in-edges.
    """
    index = dst.view(-1, 1, 1).expand_as(scores)
    node_max = torch.full((n_nodes,) + scores.shape[1:], float("-inf"),
                          dtype=scores.dtype, device=scores.device)
    # the shift cancels in the softmax, so it carries no gradient (as in DGL's backward)
    node_max = node_max.scatter_reduce(0, index, scores.detach(), reduce="amax", include_self=True)
    exp_scores = torch.exp(scores - node_max[dst])
    node_sum = torch.zeros_like(node_max).index_add(0, dst, exp_scores)
    return exp_scores / node_sum[dst]


class GATConv(nn.Module):
    """`dgl.nn.GATConv(in_feats, out_feats, num_heads, feat_drop, attn_drop)` with defaults
    negative_slope 0.2, residual False, activation None, bias True.

    Parameters: fc.weight [H*D, in], attn_l / attn_r [1, H, D], bias [H*D].
    """

    def __init__(self, in_feats: int, out_feats: int, num_heads: int,
                 feat_drop: float = 0.0, attn_drop: float = 0.0, negative_slope: float = 0.2):
        super().__init__()
        self._num_heads = num_heads
        self._out_feats = out_feats
        # creation and init order as DGL's, so one torch seed gives the reference's values
        self.fc = nn.Linear(in_feats, out_feats * num_heads, bias=False)
        self.attn_l = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.attn_r = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.feat_drop = nn.Dropout(feat_drop)
        self.attn_drop = nn.Dropout(attn_drop)
        self.leaky_relu = nn.LeakyReLU(negative_slope)
        self.bias = nn.Parameter(torch.empty(num_heads * out_feats))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_normal_(self.fc.weight, gain=gain)
        nn.init.xavier_normal_(self.attn_l, gain=gain)
        nn.init.xavier_normal_(self.attn_r, gain=gain)
        nn.init.constant_(self.bias, 0)

    def forward(self, src: torch.Tensor, dst: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """One attention layer on the edge list src -> dst (every node needs an in-edge).

        Args:
          src, dst: [E] int64 edges.
          feat: [N, in] node features.
        Returns:
          [N, H, D] per-head outputs (no activation).
        """
        n_nodes = feat.shape[0]
        heads = self.fc(self.feat_drop(feat)).view(n_nodes, self._num_heads, self._out_feats)
        score_src = (heads * self.attn_l).sum(dim=-1, keepdim=True)   # [N, H, 1]
        score_dst = (heads * self.attn_r).sum(dim=-1, keepdim=True)   # [N, H, 1]
        edge_scores = self.leaky_relu(score_src[src] + score_dst[dst])  # [E, H, 1]
        attention = self.attn_drop(edge_softmax(edge_scores, dst, n_nodes))
        messages = heads[src] * attention                              # [E, H, D]
        out = torch.zeros_like(heads).index_add(0, dst, messages)
        return out + self.bias.view(1, self._num_heads, self._out_feats)


class ItemGCN(nn.Module):
    """The reference's modality branch: Linear(in -> d), then GAT layers on the kNN graph with
    self-loops, each followed by flattening the heads, LeakyReLU(0.2) and Dropout.

    Parameters: proj.weight [d, in], proj.bias [d], layers.<l>.{fc.weight, attn_l, attn_r, bias}.
    """

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 1, num_heads: int = 8,
                 p_drop: float = 0.1):
        super().__init__()
        if out_dim % num_heads:
            raise ValueError(f"embedding size {out_dim} must be divisible by {num_heads} heads")
        self.proj = nn.Linear(in_dim, out_dim)
        self.layers = nn.ModuleList([
            GATConv(out_dim, out_dim // num_heads, num_heads, feat_drop=p_drop, attn_drop=p_drop)
            for _ in range(max(0, num_layers))])
        self.act = nn.LeakyReLU(0.2)
        self.drop = nn.Dropout(p_drop)

    def forward(self, knn_src: torch.Tensor, knn_dst: torch.Tensor,
                feats: torch.Tensor) -> torch.Tensor:
        """Args: knn_src, knn_dst: [E] kNN edges WITHOUT self-loops; feats: [I, in].
        Returns: [I, d]."""
        src, dst = add_self_loops(knn_src, knn_dst, feats.shape[0])
        x = self.proj(feats)
        for layer in self.layers:
            x = layer(src, dst, x).reshape(x.shape[0], -1)
            x = self.drop(self.act(x))
        return x
