"""recgoat_jax against the PyTorch port of the public implementation (benchmarks/torch_reference):
same parameters, same inputs, dropout off -> same embeddings, scores, loss, gradients and Adam step.

The problem is the synthetic `tiny` preset (60 users, 45 items, text 24-d, image 40-d); both
sides build their graphs (user-item graph, kNN item graphs) from the same train pairs and
features. LightGCN (`lgn` / `lightgcn`) is initialised in JAX and converted to torch; RecGOAT
(`lgn_mm` / the `recgoat-reference` preset) is initialised in torch and converted to JAX, so both
directions of `recgoat_jax.convert` are exercised.

Tolerances (float32 on both sides): embeddings, scores and loss terms 1e-4 relative, gradients
1e-3 relative, each with an absolute floor of rtol * max|expected| for entries near zero. The
first Adam step is lr * g / (|g| + eps) per entry: ~lr wherever g is resolved, but it turns
float noise in a near-zero g into a step of any size up to lr. So the steps are compared (rtol
1e-3, absolute floor 1e-3 * lr) where |g| > 1e-3 max|g| of that parameter (the gradients'
agreement tolerance), and everywhere else only bounded by lr.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (extra 'bench') is not installed")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402


from benchmarks.torch_reference import (  # noqa: E402
    ReferenceConfig, ReferenceData, build_model as build_torch_model, make_optimizer)
from recgoat_jax import cli  # noqa: E402
from recgoat_jax import config as C  # noqa: E402
from recgoat_jax.convert import flatten, jax_to_torch, torch_to_jax  # noqa: E402
from recgoat_jax.models import build_model as build_jax_model  # noqa: E402
from recgoat_jax.models.base import Batch  # noqa: E402
from recgoat_jax.models.recgoat import build_inputs, recgoat_loss  # noqa: E402
from recgoat_jax.models.registry import recgoat_loss_options, recgoat_module  # noqa: E402
from tests.conftest import CONFIGS, close  # noqa: E402

DIM, KNN_K, LR, BATCH = 32, 5, 1e-3, 96


@pytest.fixture(scope="module")
def batch_ids(tiny):
    """(users, pos, neg): [BATCH] int arrays: training pairs and uniform negatives."""
    rng = np.random.default_rng(3)
    rows = rng.choice(len(tiny.train), BATCH, replace=False)
    return (tiny.train[rows, 0].astype(np.int64), tiny.train[rows, 1].astype(np.int64),
            rng.integers(0, tiny.n_items, BATCH).astype(np.int64))


def _jax_batch(batch_ids) -> Batch:
    users, pos, neg = (jnp.asarray(x, jnp.int32) for x in batch_ids)
    return Batch(users=users, pos=pos, neg=neg, mask=jnp.ones(BATCH, bool))


def _reference_config(cfg: C.RunConfig) -> ReferenceConfig:
    """The torch port's settings from a recgoat_jax config (the values both sides use)."""
    m, loss = cfg.model, cfg.loss
    return ReferenceConfig(dim=m.dim, n_layers=m.n_layers, gat_layers=m.gat_layers,
                           gat_heads=m.gat_heads, dropout=m.dropout, alpha=m.oat.alpha_image,
                           beta=m.oat.beta_text, decay=loss.decay,
                           contrastive_weight=loss.cl_weight, modality_weight=loss.modality_weight,
                           temperature=loss.temperature, init_std=m.init_std)


def _torch_step(model, batch_ids):
    """Loss terms, gradients and parameters after one Adam step of the torch model."""
    users, pos, neg = (torch.from_numpy(x) for x in batch_ids)
    terms = model.loss_terms(users, pos, neg)
    terms["total"].backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    make_optimizer(model, lr=LR).step()
    after = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    return {k: v.item() for k, v in terms.items()}, grads, before, after


def _jax_step(loss_fn, params):
    """(total, terms), gradients and parameters after one optax Adam step, torch-named."""
    opt = optax.adam(LR)

    @jax.jit
    def step(p):
        (total, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, _ = opt.update(grads, opt.init(p), p)
        return total, terms, grads, optax.apply_updates(p, updates)

    total, terms, grads, after = step(params)
    return total, terms, jax_to_torch(grads), jax_to_torch(after)


def _check_gradients_and_adam(torch_grads, torch_before, torch_after, jax_grads, jax_after):
    assert set(jax_grads) == set(torch_grads)
    for name, g in torch_grads.items():
        close(jax_grads[name].reshape(g.shape), g, 1e-3, f"grad {name}")
    moved = 0
    for name, old in torch_before.items():
        step_torch = torch_after[name] - old
        step_jax = jax_after[name].reshape(old.shape) - old
        g = np.abs(torch_grads[name])
        resolved = g > 1e-3 * g.max()  # the rest is below the gradients' agreement tolerance
        np.testing.assert_allclose(step_jax[resolved], step_torch[resolved], rtol=1e-3,
                                   atol=1e-3 * LR, err_msg=f"adam step {name}")
        assert np.all(np.abs(step_jax) <= LR * (1 + 1e-3)), name
        moved += int(np.count_nonzero(resolved))
    assert moved > 0


# ---------------------------------------------------------------- LightGCN (lgn / lightgcn)

@pytest.fixture(scope="module")
def lightgcn(tiny):
    """(cfg, jax Recommender, jax params, torch model holding the same parameters)."""
    cfg = C.load(CONFIGS / "lightgcn.toml", [f"model.dim={DIM}", f"train.lr={LR}"])
    rec = build_jax_model(cfg, tiny)
    params = rec.init(jax.random.PRNGKey(0))
    model = build_torch_model("lgn", ReferenceData.from_dataset(tiny), _reference_config(cfg))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                           jax_to_torch(params).items()}, strict=True)
    return cfg, rec, params, model.eval()


def test_lightgcn_embeddings_scores_and_loss_agree(lightgcn, batch_ids):
    cfg, rec, params, model = lightgcn
    z_user, z_item = jax.jit(rec.embed)(params, rec.inputs)
    with torch.no_grad():
        t_user, t_item = model.computer()
        t_scores = model.users_rating(torch.from_numpy(batch_ids[0]))
    close(z_user, t_user.numpy(), 1e-4, "z_user")
    close(z_item, t_item.numpy(), 1e-4, "z_item")
    close(z_user[batch_ids[0]] @ z_item.T, t_scores.numpy(), 1e-4, "scores")
    # embeddings that differ from layer 0: the propagation really ran
    assert not np.allclose(np.asarray(z_item), np.asarray(params["embedding_item"]), atol=1e-3)


def test_lightgcn_loss_gradients_and_adam_step_agree(lightgcn, batch_ids):
    cfg, rec, params, model = lightgcn
    t_terms, t_grads, t_before, t_after = _torch_step(model, batch_ids)
    batch = _jax_batch(batch_ids)
    total, terms, grads, after = _jax_step(
        lambda p: rec.loss(p, rec.inputs, batch, jax.random.PRNGKey(1)), params)
    close(total, t_terms["total"], 1e-4, "total")
    for name in ("bpr", "reg"):
        close(terms[name], t_terms[name], 1e-4, name)
    _check_gradients_and_adam(t_grads, t_before, t_after, grads, after)


# ------------------------------------------------------- RecGOAT (lgn_mm / recgoat-reference)

@pytest.fixture(scope="module")
def recgoat(tiny):
    """(cfg, forward(params), jax params, torch model): parameters initialised in torch."""
    cfg = C.load(CONFIGS / "recgoat-reference.toml",
                 [f"model.dim={DIM}", f"model.knn_k={KNN_K}", f"train.lr={LR}"])
    model = build_torch_model("lgn_mm", ReferenceData.from_dataset(tiny), _reference_config(cfg),
                              knn_k=KNN_K, seed=0).eval()
    params = jax.tree.map(jnp.asarray, torch_to_jax(model.state_dict()))
    modalities = ("image", "text")
    module = recgoat_module(cfg, tiny.n_users, tiny.n_items, modalities)
    inputs = build_inputs(tiny, modalities, (), knn_k=cfg.model.knn_k, user_knn_k=0,
                          n_layers=cfg.model.n_layers)

    def forward(p):
        return module.apply({"params": p}, inputs, deterministic=True)

    return cfg, forward, params, model


def test_recgoat_embeddings_plans_scores_and_loss_agree(recgoat, batch_ids):
    cfg, forward, params, model = recgoat
    out = jax.jit(forward)(params)
    with torch.no_grad():
        emb = model.compute_embeddings()
        t_scores = model.users_rating(torch.from_numpy(batch_ids[0]))
        t_terms = model.loss_terms(*(torch.from_numpy(x) for x in batch_ids))
    close(out["z_user"], emb["z_user"].numpy(), 1e-4, "z_user")
    close(out["z_item_cf"], emb["z_item_cf"].numpy(), 1e-4, "z_item_cf")
    close(out["z_item"], emb["z_item_fused"].numpy(), 1e-4, "z_item_fused")
    for m in ("image", "text"):
        close(out["z_modal"][m], emb[f"z_item_{m}"].numpy(), 1e-4, f"z_item_{m}")
        close(out["plans"][m], emb[f"plan_{m}"].numpy(), 1e-4, f"plan_{m}")
        assert float(np.sum(out["plans"][m])) > 1e-3  # a real plan, not an underflowed one
    close(out["z_user"][batch_ids[0]] @ out["z_item"].T, t_scores.numpy(), 1e-4, "scores")
    options = recgoat_loss_options(cfg.loss)
    total, terms = jax.jit(lambda o, b: recgoat_loss(options, o, b))(out, _jax_batch(batch_ids))
    close(total, t_terms["total"].item(), 1e-4, "total")
    for name in ("bpr", "reg", "cl"):
        close(terms[name], t_terms[name].item(), 1e-4, name)


def test_recgoat_gradients_and_adam_step_agree(recgoat, batch_ids):
    cfg, forward, params, model = recgoat
    t_terms, t_grads, t_before, t_after = _torch_step(model, batch_ids)
    batch = _jax_batch(batch_ids)
    options = recgoat_loss_options(cfg.loss)
    total, _, grads, after = _jax_step(lambda p: recgoat_loss(options, forward(p), batch), params)
    close(total, t_terms["total"], 1e-4, "total")
    _check_gradients_and_adam(t_grads, t_before, t_after, grads, after)


# ------------------------------------------------------------- `recgoat-jax convert` CLI

@pytest.mark.parametrize("name", ["lgn", "lgn_mm"])
def test_convert_cli_round_trip_restores_the_state_dict(tiny, tmp_path, name):
    data = ReferenceData.from_dataset(tiny)
    config = ReferenceConfig(dim=DIM)
    original = build_torch_model(name, data, config, knn_k=KNN_K, seed=0).state_dict()
    torch.save(original, tmp_path / "model.pt")
    assert cli.main(["convert", "--to", "jax", str(tmp_path / "model.pt"),
                     str(tmp_path / "params.npz")]) == 0
    with np.load(tmp_path / "params.npz") as f:
        assert set(f.files) == set(flatten(torch_to_jax(original)))
    assert cli.main(["convert", "--to", "torch", str(tmp_path / "params.npz"),
                     str(tmp_path / "back.pt")]) == 0
    restored = torch.load(tmp_path / "back.pt", weights_only=True)
    assert set(restored) == set(original)
    for key, value in original.items():
        assert restored[key].shape == value.shape, key
        assert torch.equal(restored[key], value), key
    other = build_torch_model(name, data, config, knn_k=KNN_K, seed=1)
    other.load_state_dict(restored, strict=True)
    assert torch.equal(other.state_dict()[next(iter(original))], next(iter(original.values())))
