"""The reference's loss terms (REFERENCE.md section 4), computed as it computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(user_emb: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(<u, pos> - <u, neg>).  Args: [B, d] each.  Returns: []."""
    margin = (user_emb * pos_emb).sum(1) - (user_emb * neg_emb).sum(1)
    return -F.logsigmoid(margin).mean()


def l2_reg(user_emb0: torch.Tensor, pos_emb0: torch.Tensor, neg_emb0: torch.Tensor) -> torch.Tensor:
    """mean over the batch of ||e_u||^2 + ||e_pos||^2 + ||e_neg||^2 (no 1/2), on the layer-0
    embeddings.  Args: [B, d] each.  Returns: []."""
    return (user_emb0.pow(2).sum(1) + pos_emb0.pow(2).sum(1) + neg_emb0.pow(2).sum(1)).mean()


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE with L2-normalised rows, computed naively (exp, sum, log) as the reference.

    Args: view1, view2: [B, d]; row r of each is a positive pair, every other row a negative.
    Returns: [].
    """
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos_score = torch.exp((view1 * view2).sum(dim=-1) / temperature)            # [B]
    total_score = torch.exp(view1 @ view2.t() / temperature).sum(dim=1)          # [B]
    return torch.mean(-torch.log(pos_score / total_score))


def reference_contrastive(user_emb: torch.Tensor, pos_fused: torch.Tensor,
                          pos: torch.Tensor, neg: torch.Tensor, z_item_cf: torch.Tensor,
                          z_item_image: torch.Tensor, z_item_text: torch.Tensor,
                          modality_weight: float, temperature: float) -> torch.Tensor:
    """(1 - w) InfoNCE(user, fused pos) + w * mean of six (1 - InfoNCE) modality terms.

    The modality pairs are (cf, image), (cf, text), (image, text), at the positive items and
    again at the negative items. Minimising (1 - InfoNCE) pushes modalities APART (defect 4).

    Args:
      user_emb, pos_fused: [B, d]; pos, neg: [B] item ids;
      z_item_cf, z_item_image, z_item_text: [I, d].
    Returns: [].
    """
    loss_user_item = info_nce(user_emb, pos_fused, temperature)
    modality_terms = []
    for items in (pos, neg):
        cf, img, txt = z_item_cf[items], z_item_image[items], z_item_text[items]
        for a, b in ((cf, img), (cf, txt), (img, txt)):
            modality_terms.append(1 - info_nce(a, b, temperature))
    loss_modality = sum(modality_terms) / len(modality_terms)
    return (1 - modality_weight) * loss_user_item + modality_weight * loss_modality
