"""The reference's "OAT" fusion: a d x d transport plan between embedding DIMENSIONS.

`oat_align` is the per-modality alignment (cost, kernel-domain Sinkhorn without gradient,
z_m @ (T + Delta)); `OATFusion` mixes the aligned modalities with the ID embeddings.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

COST_SCALE = 100.0
EPSILON = 1e-2
SINKHORN_ITERATIONS = 100
GUARD = 1e-8


def dimension_cost(z_m: torch.Tensor, z_cf: torch.Tensor, closed_form: bool = False,
                   scale: float = COST_SCALE) -> torch.Tensor:
    """C[p, q] = scale * mean_i (z_m[i, p] - z_cf[i, q])^2.

    Args:
      z_m, z_cf: [I, d] modality and ID item embeddings.
      closed_form: False (reference) materialises the [I, d, d] difference tensor;
        True uses the identical O(I d + d^2) expansion of the square.
    Returns:
      [d, d] cost.
    """
    if not closed_form:
        return torch.pow(z_m.unsqueeze(2) - z_cf.unsqueeze(1), 2).mean(dim=0) * scale
    n_items = z_m.shape[0]
    mean_sq_m = z_m.pow(2).mean(dim=0)      # [d]
    mean_sq_cf = z_cf.pow(2).mean(dim=0)    # [d]
    cross = z_m.t() @ z_cf / n_items         # [d, d]
    return (mean_sq_m.unsqueeze(1) + mean_sq_cf.unsqueeze(0) - 2 * cross) * scale


def sinkhorn_plan(cost: torch.Tensor, epsilon: float = EPSILON,
                  iterations: int = SINKHORN_ITERATIONS) -> torch.Tensor:
    """Kernel-domain Sinkhorn with uniform marginals, a fixed iteration count and 1e-8 guards.

    Args:
      cost: [n, m].
    Returns:
      [n, m] plan T = diag(u) K diag(v), K = exp(-cost / epsilon). It underflows to 0 when
      cost / epsilon is large (REFERENCE.md section 7, defect 2).
    """
    n, m = cost.shape
    mu = torch.ones(n, device=cost.device) / n
    nu = torch.ones(m, device=cost.device) / m
    kernel = torch.exp(-cost / epsilon)
    u = torch.ones(n, device=cost.device) / n
    v = torch.ones(m, device=cost.device) / m
    for _ in range(iterations):
        u = mu / (kernel @ v + GUARD)
        v = nu / (kernel.T @ u + GUARD)
    return torch.diag(u) @ kernel @ torch.diag(v)


def oat_align(z_m: torch.Tensor, z_cf: torch.Tensor, delta: torch.Tensor,
              closed_form: bool = False, epsilon: float = EPSILON,
              iterations: int = SINKHORN_ITERATIONS,
              scale: float = COST_SCALE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align a modality's item embeddings to the ID space, as the reference's cal_ot_alignment.

    Args:
      z_m: [I, d] modality embeddings; z_cf: [I, d] LightGCN item embeddings;
      delta: [d, d] learnable residual map Delta_m.
      closed_form: compute the cost without the [I, d, d] tensor (same values).
    Returns:
      (aligned [I, d] = z_m @ (T + delta), plan T [d, d] (no gradient), cost [d, d]).
    """
    cost = dimension_cost(z_m, z_cf, closed_form, scale)
    with torch.no_grad():
        plan = sinkhorn_plan(cost, epsilon, iterations)
    return z_m @ (plan + delta), plan, cost


class OATFusion(nn.Module):
    """Reference `FusionModule(mode='oat')`.

    Parameters: delta_img, delta_txt [d, d] (xavier-uniform), alpha, beta [] (0.05, 0.8,
    unconstrained), ln.weight, ln.bias [d].
    """

    def __init__(self, dim: int, p_drop: float = 0.1, alpha: float = 0.05, beta: float = 0.8,
                 closed_form_cost: bool = False):
        super().__init__()
        self.closed_form_cost = closed_form_cost
        self.delta_img = nn.Parameter(torch.empty(dim, dim))
        self.delta_txt = nn.Parameter(torch.empty(dim, dim))
        nn.init.xavier_uniform_(self.delta_img)
        nn.init.xavier_uniform_(self.delta_txt)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.beta = nn.Parameter(torch.tensor(float(beta)))
        self.ln = nn.LayerNorm(dim)
        self.drop = nn.Dropout(p_drop)

    def forward(self, z_cf: torch.Tensor, z_img: torch.Tensor,
                z_txt: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Args: z_cf, z_img, z_txt: [I, d].
        Returns: (z_fused [I, d] with unit rows, {"plan_image", "plan_text", "cost_image",
        "cost_text"}: [d, d] each)."""
        aligned_img, plan_img, cost_img = oat_align(z_img, z_cf, self.delta_img,
                                                    self.closed_form_cost)
        aligned_txt, plan_txt, cost_txt = oat_align(z_txt, z_cf, self.delta_txt,
                                                    self.closed_form_cost)
        z_fused = ((1 - self.alpha - self.beta) * z_cf + self.alpha * aligned_img
                   + self.beta * aligned_txt)
        z_fused = self.drop(self.ln(z_fused))
        transport = {"plan_image": plan_img, "plan_text": plan_txt,
                     "cost_image": cost_img, "cost_text": cost_txt}
        return F.normalize(z_fused, dim=-1), transport
