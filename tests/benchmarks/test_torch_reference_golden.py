"""The PyTorch port in benchmarks/torch_reference against the public implementation's golden
outputs (../shared/golden/reference_tiny.npz), plus behaviour the golden file cannot show
(training mode, batching, ranking metrics).

Tolerances used (float32 throughout): embeddings, costs, scores to rtol 1e-4 (atol 1e-6);
plans rtol 1e-4 with atol 1e-8; loss terms rtol 1e-5; gradients rtol 1e-3 with atol 1e-7
(gradient entries run 1e-4..3e-2); one Adam step rtol 1e-5 with atol 1e-6 (Adam's first
step is lr * g / (|g| + 1e-8), which amplifies float noise in near-zero gradients; the step
itself is lr = 8e-4). The port actually agrees to ~1e-7 relative everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (extra 'bench') is not installed")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


from benchmarks.torch_reference import (  # noqa: E402
    LightGCN, ReferenceConfig, ReferenceData, build_model, dimension_cost, edge_softmax,
    evaluate, make_optimizer, oat_align, train_epoch)



MULTIMODAL_KEYS = {
    "cf.embedding_user.weight", "cf.embedding_item.weight", "fuse.delta_img", "fuse.delta_txt",
    "fuse.alpha", "fuse.beta", "fuse.ln.weight", "fuse.ln.bias",
} | {f"{branch}.{name}" for branch in ("txt_branch", "img_branch")
     for name in ("proj.weight", "proj.bias", "layers.0.fc.weight", "layers.0.attn_l",
                  "layers.0.attn_r", "layers.0.bias")}


@pytest.fixture(scope="module")
def tiny(golden):
    """(data, config, knn_k) of the golden problem."""
    data = ReferenceData.from_arrays(
        int(golden["n_users"]), int(golden["n_items"]),
        np.stack([golden["train_users"], golden["train_items"]], 1),
        item_features={"text": golden["text_feat"], "image": golden["image_feat"]})
    config = ReferenceConfig(dim=int(golden["dim"]), decay=float(golden["decay"]),
                             contrastive_weight=float(golden["contrastive_weight"]),
                             temperature=float(golden["temperature"]),
                             modality_weight=float(golden["modality_consistency_weight"]))
    return data, config, int(golden["knn_k"])


def _golden_params(golden, prefix="param/", strip=""):
    return {k[len(prefix) + len(strip):]: torch.from_numpy(v) for k, v in golden.items()
            if k.startswith(prefix + strip)}


@pytest.fixture()
def model(golden, tiny):
    """lgn_mm with the golden parameters, in eval mode (as the golden file was produced)."""
    data, config, knn_k = tiny
    m = build_model("lgn_mm", data, config, knn_k=knn_k)
    m.load_state_dict(_golden_params(golden), strict=True)
    return m.eval()


def _batch(golden):
    return tuple(torch.from_numpy(golden[k]) for k in ("batch_users", "batch_pos", "batch_neg"))


def test_state_dict_keys_are_the_public_implementations(golden, tiny):
    data, config, knn_k = tiny
    assert set(build_model("lgn_mm", data, config, knn_k=knn_k).state_dict()) == MULTIMODAL_KEYS
    assert set(_golden_params(golden)) == MULTIMODAL_KEYS
    assert set(build_model("lgn", data, config).state_dict()) == {
        "embedding_user.weight", "embedding_item.weight"}


def test_seeded_init_reproduces_the_references_initial_parameters(golden, tiny):
    # the golden parameters are the reference's initialisation after torch.manual_seed(0):
    # same draw order, distributions and shapes give the same numbers
    data, config, knn_k = tiny
    params = build_model("lgn_mm", data, config, knn_k=knn_k, seed=0).state_dict()
    for name, value in _golden_params(golden).items():
        np.testing.assert_allclose(params[name].numpy(), value.numpy(), rtol=1e-6, atol=0,
                                   err_msg=name)


def test_graphs_equal_the_references(golden, model):
    adjacency = model.cf.graph
    np.testing.assert_array_equal(adjacency.indices().numpy(), golden["adj_index"])
    np.testing.assert_allclose(adjacency.values().numpy(), golden["adj_value"], rtol=1e-6)
    for modality, prefix in (("text", "knn_text"), ("image", "knn_image")):
        ours = set(zip(getattr(model, prefix + "_src").tolist(),
                       getattr(model, prefix + "_dst").tolist()))
        theirs = set(zip(golden[f"knn_{modality}_src"].tolist(),
                         golden[f"knn_{modality}_dst"].tolist()))
        assert ours == theirs, modality
        assert len(getattr(model, prefix + "_src")) == len(theirs)  # no duplicate edges


def test_forward_pass_equals_the_references(golden, model):
    with torch.no_grad():
        emb = model.compute_embeddings()
        scores = model.users_rating(_batch(golden)[0])
    for key in ("z_user", "z_item_cf", "z_item_text", "z_item_image", "z_item_fused",
                "cost_image", "cost_text"):
        np.testing.assert_allclose(emb[key].numpy(), golden["out/" + key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    for key in ("plan_image", "plan_text"):
        np.testing.assert_allclose(emb[key].numpy(), golden["out/" + key], rtol=1e-4, atol=1e-8,
                                   err_msg=key)
    np.testing.assert_allclose(scores.numpy(), golden["out/scores_batch_users"],
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("closed_form", [False, True])
def test_oat_alignment_equals_the_references(golden, closed_form):
    delta = torch.from_numpy(golden["param/fuse.delta_img"])
    aligned, plan, cost = oat_align(torch.from_numpy(golden["ot_small/z_m"]),
                                    torch.from_numpy(golden["ot_small/z_cf"]), delta, closed_form)
    np.testing.assert_allclose(cost.numpy(), golden["ot_small/cost"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(plan.numpy(), golden["ot_small/plan"], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(aligned.numpy(), golden["ot_small/aligned"], rtol=1e-4, atol=1e-6)
    assert abs(plan.sum().item() - 1.0) < 1e-4
    # the closed form is the reference's [I, d, d] cost at realistic scales too
    for modality in ("image", "text"):
        cost = dimension_cost(torch.from_numpy(golden[f"out/z_item_{modality}"]),
                              torch.from_numpy(golden["out/z_item_cf"]), closed_form)
        np.testing.assert_allclose(cost.numpy(), golden[f"out/cost_{modality}"],
                                   rtol=1e-4, atol=1e-6)


def test_losses_gradients_and_one_adam_step_equal_the_references(golden, model):
    terms = model.loss_terms(*_batch(golden))
    for key in ("bpr", "reg", "cl", "total"):
        np.testing.assert_allclose(terms[key].item(), float(golden["loss/" + key]), rtol=1e-5,
                                   err_msg=key)
    terms["total"].backward()
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad.numpy(), golden["grad/" + name], rtol=1e-3,
                                   atol=1e-7, err_msg=name)
    make_optimizer(model, lr=float(golden["lr"])).step()
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.detach().numpy(), golden["adam1/" + name], rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_lightgcn_alone_matches_the_references_backbone(golden, tiny):
    data, config, _ = tiny
    lgn = build_model("lgn", data, config)
    assert isinstance(lgn, LightGCN)
    lgn.load_state_dict(_golden_params(golden, strip="cf."), strict=True)
    users, pos, neg = _batch(golden)
    with torch.no_grad():
        z_user, z_item = lgn.computer()
        terms = lgn.loss_terms(users, pos, neg)
    np.testing.assert_allclose(z_user.numpy(), golden["out/z_user"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(z_item.numpy(), golden["out/z_item_cf"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(terms["reg"].item(), float(golden["loss/reg"]), rtol=1e-5)
    np.testing.assert_allclose(terms["total"].item(),
                               terms["bpr"].item() + float(golden["decay"]) * terms["reg"].item(),
                               rtol=1e-6)


def test_train_mode_keeps_dropout_on_and_eval_mode_turns_it_off(model):
    with torch.no_grad():
        first = model.compute_embeddings()["z_item_fused"]
        assert torch.equal(first, model.compute_embeddings()["z_item_fused"])
        model.train()
        noisy = model.compute_embeddings()["z_item_fused"]
    assert not torch.allclose(first, noisy, atol=1e-3)


def test_train_epoch_batches_as_the_reference_and_is_seedable(tiny):
    data, config, knn_k = tiny
    n_pairs, batch_size = len(data.train_users), 100
    results = []
    for _ in range(2):
        model = build_model("lgn_mm", data, config, knn_k=knn_k, seed=0).eval()
        optimizer = make_optimizer(model)
        loss = train_epoch(model, optimizer, data, batch_size, torch.Generator().manual_seed(7))
        steps = {int(s["step"]) for s in optimizer.state.values()}
        results.append((loss, model.state_dict()))
    assert steps == {-(-n_pairs // batch_size)}  # 331 pairs -> 3 full batches + the remainder
    assert 0.6 < results[0][0] < 0.8  # ~log 2 + small terms at initialisation
    assert results[0][0] == results[1][0]
    for name, value in results[0][1].items():
        assert torch.equal(value, results[1][1][name]), name
    untrained = build_model("lgn_mm", data, config, knn_k=knn_k, seed=0).state_dict()
    assert not torch.equal(untrained["fuse.delta_txt"], results[0][1]["fuse.delta_txt"])


def test_edge_softmax_is_a_softmax_over_each_nodes_in_edges():
    gen = torch.Generator().manual_seed(0)
    n_nodes, n_heads = 6, 3
    src = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2, 4, 1])
    dst = torch.tensor([1, 1, 1, 2, 2, 0, 3, 4, 5, 5])
    scores = torch.randn(len(src), n_heads, 1, generator=gen) * 5
    attention = edge_softmax(scores, dst, n_nodes)
    for node in range(n_nodes):
        incoming = (dst == node).nonzero().flatten()
        if len(incoming):
            expected = torch.softmax(scores[incoming], dim=0)
            torch.testing.assert_close(attention[incoming], expected)


class _FixedScores(torch.nn.Module):
    """A model stub whose scores are given, to check the ranking metrics by hand."""

    def __init__(self, scores):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def users_rating(self, users):
        return self.scores[users].clone()


def test_evaluate_masks_training_items_and_computes_recall_and_ndcg():
    # user 0: train {0}, test {1, 3}; ranking after masking: 1, 3, 2, 4 -> hits at ranks 0, 1
    # user 1: train {4}, test {2};    ranking after masking: 0, 1, 2, 3 -> hit at rank 2
    data = ReferenceData.from_arrays(2, 5, np.array([[0, 0], [1, 4]]),
                                     np.array([[0, 1], [0, 3], [1, 2]]))
    stub = _FixedScores([[9, 8, 1, 7, 0], [5, 4, 3, 2, 9]])
    result = evaluate(stub, data, ks=(2, 3), user_batch=1)
    np.testing.assert_allclose(result["recall"], [0.5, 1.0])
    np.testing.assert_allclose(result["ndcg"], [0.5, (1.0 + 1.0 / np.log2(4)) / 2])
