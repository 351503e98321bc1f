"""The reference's training epoch and full-ranking evaluation, timed as it runs them."""

from __future__ import annotations

import numpy as np
import torch

from .data import ReferenceData

MASKED_SCORE = -(1 << 10)  # what the reference writes over a user's training items


def make_optimizer(model: torch.nn.Module, lr: float = 8e-4) -> torch.optim.Optimizer:
    """Adam, no weight decay, no schedule (reference `utils.Loss`)."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=0.0)


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: ReferenceData,
                batch_size: int, generator: torch.Generator) -> float:
    """One epoch as the reference's `train_v2`: shuffle all training pairs, cut them into
    batches of `batch_size` (the last one is the remainder), draw one uniform negative item per
    pair (positives not excluded), one Adam step per batch on a full forward pass.

    The model's mode is left as it is: the reference always trains AND evaluates in train mode.
    Shuffling and negatives come from `generator` (a CPU torch.Generator) instead of the
    reference's python `random` / numpy global RNG: same distribution, different stream.

    Returns: the mean of the batches' total losses.
    """
    device = next(model.parameters()).device
    n_pairs = len(data.train_users)
    order = torch.randperm(n_pairs, generator=generator)
    batch_losses = []
    for start in range(0, n_pairs, batch_size):
        index = order[start:start + batch_size]
        users = data.train_users[index].to(device)
        pos = data.train_items[index].to(device)
        neg = torch.randint(0, data.n_items, (len(index),), generator=generator).to(device)
        loss = model.loss_terms(users, pos, neg)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batch_losses.append(loss.item())
    return float(np.mean(batch_losses))


def _items_by_user(pairs: np.ndarray, n_users: int) -> list[np.ndarray]:
    order = np.argsort(pairs[:, 0], kind="stable")
    counts = np.bincount(pairs[:, 0], minlength=n_users)
    return np.split(pairs[order, 1], np.cumsum(counts)[:-1])


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: ReferenceData, ks: tuple[int, ...] = (20,),
             user_batch: int = 1024) -> dict[str, np.ndarray]:
    """Full ranking as the reference's `Procedure.Test`.

    Every user with a test item is ranked against all items, the user's training items set to
    -1024, top max(ks) taken. Users are split with np.array_split into max(1, n // user_batch)
    chunks and each chunk recomputes the full forward pass (as `getUsersRating` does). The
    model's current mode is used (the reference never calls eval()).

    Returns: {"recall": [len(ks)], "ndcg": [len(ks)]} averaged over the test users;
      NDCG uses binary gains 1/log2(rank+2), ideal DCG over min(|test items|, K).
    """
    if len(data.test_pairs) == 0:
        raise ValueError("evaluate: ReferenceData.test_pairs is empty")
    device = next(model.parameters()).device
    train_pairs = torch.stack([data.train_users, data.train_items], 1).numpy()
    train_by_user = _items_by_user(train_pairs, data.n_users)
    test_by_user = _items_by_user(data.test_pairs, data.n_users)
    test_users = np.unique(data.test_pairs[:, 0])
    max_k = max(ks)
    hit_rows = []
    for chunk in np.array_split(test_users, max(1, len(test_users) // user_batch)):
        scores = model.users_rating(torch.from_numpy(chunk).to(device))     # [b, I]
        rows = np.concatenate([np.full(len(train_by_user[u]), r) for r, u in enumerate(chunk)])
        cols = np.concatenate([train_by_user[u] for u in chunk])
        scores[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = MASKED_SCORE
        top_items = torch.topk(scores, k=max_k, dim=1).indices.cpu().numpy()  # [b, K]
        hit_rows.extend(np.isin(top_items[r], test_by_user[u]) for r, u in enumerate(chunk))
    hits = np.asarray(hit_rows, dtype=np.float64)                          # [T, K]
    n_test = np.array([len(test_by_user[u]) for u in test_users], dtype=np.float64)
    discounts = 1.0 / np.log2(np.arange(max_k) + 2)
    recall, ndcg = [], []
    for k in ks:
        recall.append(np.mean(hits[:, :k].sum(1) / n_test))
        ideal = np.cumsum(discounts)[np.minimum(n_test, k).astype(int) - 1]
        ndcg.append(np.mean((hits[:, :k] * discounts[:k]).sum(1) / ideal))
    return {"recall": np.array(recall), "ndcg": np.array(ndcg)}
