"""The reference's models: `lgn` (LightGCN) and `lgn_mm` (RecGOAT: LightGCN + modality GAT
branches + OAT fusion). Module and parameter names equal the public implementation's
state_dict keys, so its checkpoints load with ``strict=True``.

Graphs and features are non-persistent buffers: they move with ``.to(device)`` but are not
part of the state_dict (the reference holds them as plain attributes).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from .gat import ItemGCN
from .losses import bpr_loss, l2_reg, reference_contrastive
from .oat import OATFusion


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    """The reference's settings (its command-line flags), with the published defaults."""

    dim: int = 64                  # --recdim
    n_layers: int = 3              # --layer (LightGCN propagation)
    gat_layers: int = 1            # --item_branch_layers
    gat_heads: int = 8             # hard-wired in the reference (--attn_heads is ignored)
    dropout: float = 0.1           # --fuse_drop: GAT feat/attn dropout, branch and fusion dropout
    alpha: float = 0.05            # initial image fusion weight
    beta: float = 0.8              # initial text fusion weight
    decay: float = 1e-4
    contrastive_weight: float = 0.032
    modality_weight: float = 0.5   # --modality_consistency_weight (w)
    temperature: float = 0.2
    init_std: float = 0.1
    closed_form_cost: bool = False  # True: O(d^2)-memory OAT cost (same values)


class LightGCN(nn.Module):
    """Model `lgn`. Parameters: embedding_user.weight [U, d], embedding_item.weight [I, d]."""

    def __init__(self, n_users: int, n_items: int, adjacency: torch.Tensor,
                 config: ReferenceConfig = ReferenceConfig()):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.n_layers = config.n_layers
        self.decay = config.decay
        self.register_buffer("graph", adjacency, persistent=False)
        self.embedding_user = nn.Embedding(n_users, config.dim)
        self.embedding_item = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.embedding_user.weight, std=config.init_std)
        nn.init.normal_(self.embedding_item.weight, std=config.init_std)

    def computer(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN propagation. Returns (z_user [U, d], z_item [I, d]): mean of layers 0..L."""
        all_emb = torch.cat([self.embedding_user.weight, self.embedding_item.weight])  # [U+I, d]
        layers = [all_emb]
        for _ in range(self.n_layers):
            all_emb = torch.sparse.mm(self.graph, all_emb)
            layers.append(all_emb)
        light_out = torch.stack(layers, dim=1).mean(dim=1)
        return torch.split(light_out, [self.n_users, self.n_items])

    def users_rating(self, users: torch.Tensor) -> torch.Tensor:
        """Reference `getUsersRating`. users: [B] -> scores [B, I]."""
        z_user, z_item = self.computer()
        return z_user[users] @ z_item.t()

    def loss_terms(self, users: torch.Tensor, pos: torch.Tensor,
                   neg: torch.Tensor) -> dict[str, torch.Tensor]:
        """BPR + decay * reg. users, pos, neg: [B]. Returns {"bpr", "reg", "total"}: [] each.

        (The reference's training loop calls `calculate_loss`, which its LightGCN lacks; this
        is the sum its `bpr_loss` terms were written for.)"""
        z_user, z_item = self.computer()
        bpr = bpr_loss(z_user[users], z_item[pos], z_item[neg])
        reg = l2_reg(self.embedding_user(users), self.embedding_item(pos), self.embedding_item(neg))
        return {"bpr": bpr, "reg": reg, "total": bpr + self.decay * reg}


class MultiModalLightGCN(nn.Module):
    """Model `lgn_mm` (RecGOAT). Parameters: cf.* (LightGCN), txt_branch.* and img_branch.*
    (ItemGCN), fuse.* (OATFusion).

    Args:
      adjacency: [U+I, U+I] sparse normalised user-item graph.
      text_feat, image_feat: [I, in_m] float32 features, or None (that branch then yields
        z_cf, as in the reference).
      knn_text, knn_image: (src, dst) [E_m] kNN edges without self-loops (None with no feature).
    """

    def __init__(self, n_users: int, n_items: int, adjacency: torch.Tensor,
                 text_feat: torch.Tensor | None, image_feat: torch.Tensor | None,
                 knn_text: tuple[torch.Tensor, torch.Tensor] | None,
                 knn_image: tuple[torch.Tensor, torch.Tensor] | None,
                 config: ReferenceConfig = ReferenceConfig()):
        super().__init__()
        self.config = config
        # construction order as the reference: one torch seed gives its initial values
        self.cf = LightGCN(n_users, n_items, adjacency, config)
        for name, value in (("text_feat", text_feat), ("image_feat", image_feat)):
            self.register_buffer(name, None if value is None else value.float(), persistent=False)
        for name, graph in (("knn_text", knn_text), ("knn_image", knn_image)):
            src, dst = (None, None) if graph is None else graph
            self.register_buffer(name + "_src", src, persistent=False)
            self.register_buffer(name + "_dst", dst, persistent=False)
        d = config.dim
        in_txt = d if text_feat is None else text_feat.shape[1]
        in_img = d if image_feat is None else image_feat.shape[1]
        self.txt_branch = ItemGCN(in_txt, d, config.gat_layers, config.gat_heads, config.dropout)
        self.img_branch = ItemGCN(in_img, d, config.gat_layers, config.gat_heads, config.dropout)
        self.fuse = OATFusion(d, config.dropout, config.alpha, config.beta, config.closed_form_cost)

    def compute_embeddings(self) -> dict[str, torch.Tensor]:
        """One full forward pass (the reference recomputes it for every batch).

        Returns: z_user [U, d]; z_item_fused, z_item_cf, z_item_image, z_item_text [I, d];
        plan_image, plan_text, cost_image, cost_text [d, d].
        """
        z_user, z_item_cf = self.cf.computer()
        z_item_text = z_item_cf if self.text_feat is None or self.knn_text_src is None else \
            self.txt_branch(self.knn_text_src, self.knn_text_dst, self.text_feat)
        z_item_image = z_item_cf if self.image_feat is None or self.knn_image_src is None else \
            self.img_branch(self.knn_image_src, self.knn_image_dst, self.image_feat)
        z_item_fused, transport = self.fuse(z_item_cf, z_item_image, z_item_text)
        return {"z_user": z_user, "z_item_fused": z_item_fused, "z_item_cf": z_item_cf,
                "z_item_image": z_item_image, "z_item_text": z_item_text, **transport}

    def users_rating(self, users: torch.Tensor) -> torch.Tensor:
        """Reference `getUsersRating`. users: [B] -> scores [B, I] = z_user[users] @ z_fused^T."""
        emb = self.compute_embeddings()
        return emb["z_user"][users] @ emb["z_item_fused"].t()

    def loss_terms(self, users: torch.Tensor, pos: torch.Tensor,
                   neg: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reference `calculate_loss`, split into its terms.

        Args: users, pos, neg: [B] int64.
        Returns: {"bpr", "reg", "cl", "total"}: [] each; total = bpr + decay reg + lambda_cl cl.
        """
        cfg = self.config
        emb = self.compute_embeddings()
        user_emb = emb["z_user"][users]
        pos_fused, neg_fused = emb["z_item_fused"][pos], emb["z_item_fused"][neg]
        bpr = bpr_loss(user_emb, pos_fused, neg_fused)
        reg = l2_reg(self.cf.embedding_user(users), self.cf.embedding_item(pos),
                     self.cf.embedding_item(neg))
        cl = reference_contrastive(user_emb, pos_fused, pos, neg, emb["z_item_cf"],
                                   emb["z_item_image"], emb["z_item_text"],
                                   cfg.modality_weight, cfg.temperature)
        total = bpr + cfg.decay * reg + cfg.contrastive_weight * cl
        return {"bpr": bpr, "reg": reg, "cl": cl, "total": total}
