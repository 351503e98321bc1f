"""Parameters between the public PyTorch implementation's state_dict and recgoat_jax's pytree.

torch names (`lgn_mm`)                      recgoat_jax names
cf.embedding_user.weight [U, d]             cf/embedding_user
cf.embedding_item.weight [I, d]             cf/embedding_item
txt_branch.proj.weight [d, in] (+ .bias)    branch_text/proj/kernel [in, d] (+ bias)
txt_branch.layers.L.fc.weight [d, d]        branch_text/gat_L/kernel [d, d] (transposed)
txt_branch.layers.L.attn_l [1, H, d/H]      branch_text/gat_L/attn_l [H, d/H] (attn_r alike)
txt_branch.layers.L.bias [d]                branch_text/gat_L/bias
img_branch.* / <m>_branch.*                 branch_image/* / branch_<m>/*
fuse.delta_img, fuse.delta_txt [d, d]       fuse/delta_image, fuse/delta_text
fuse.alpha [], fuse.beta []                 fuse/weight_image, fuse/weight_text
fuse.ln.weight, fuse.ln.bias [d]            fuse/ln/scale, fuse/ln/bias
`lgn`: embedding_user.weight, embedding_item.weight   embedding_user, embedding_item
"""

from __future__ import annotations

import re

import numpy as np

from recgoat_jax.tree_utils import flatten, unflatten  # noqa: F401  (.npz files: "a/b" keys)

TORCH_BRANCH = {"text": "txt_branch", "image": "img_branch"}
TORCH_FUSE = {"image": "img", "text": "txt"}
FUSE_WEIGHT = {"image": "alpha", "text": "beta"}


def _branch_prefix(m: str) -> str:
    return TORCH_BRANCH.get(m, f"{m}_branch")


def _modality_of_prefix(prefix: str) -> str:
    inverse = {v: k for k, v in TORCH_BRANCH.items()}
    return inverse.get(prefix, prefix.removesuffix("_branch"))


def _refuse_unmapped(unmapped_params: dict) -> None:
    if unmapped_params:
        unmapped = sorted(flatten(unmapped_params))
        raise ValueError(f"jax_to_torch: no PyTorch counterpart for the parameters {unmapped} "
                         "(the PyTorch port of the reference has no user side): convert a "
                         "model trained with model.user_side = false")


def torch_to_jax(state_dict: dict) -> dict:
    """A torch state_dict (tensors or arrays) -> the recgoat_jax params pytree (numpy)."""
    sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)
          for k, v in state_dict.items()}
    if set(sd) == {"embedding_user.weight", "embedding_item.weight"}:  # `lgn`
        return {"embedding_user": sd["embedding_user.weight"],
                "embedding_item": sd["embedding_item.weight"]}
    params: dict = {"cf": {}, "fuse": {}}
    for key, value in sd.items():
        if key.startswith("cf."):
            params["cf"][key.split(".")[1]] = value
        elif m := re.fullmatch(r"(\w+_branch)\.proj\.(weight|bias)", key):
            node = params.setdefault(f"branch_{_modality_of_prefix(m[1])}", {}).setdefault("proj", {})
            node["kernel" if m[2] == "weight" else "bias"] = value.T if m[2] == "weight" else value
        elif m := re.fullmatch(r"(\w+_branch)\.layers\.(\d+)\.(fc\.weight|attn_l|attn_r|bias)", key):
            node = params.setdefault(f"branch_{_modality_of_prefix(m[1])}", {}).setdefault(
                f"gat_{m[2]}", {})
            if m[3] == "fc.weight":
                node["kernel"] = value.T
            elif m[3] in ("attn_l", "attn_r"):
                node[m[3]] = value.reshape(value.shape[-2], value.shape[-1])
            else:
                node["bias"] = value
        elif m := re.fullmatch(r"fuse\.delta_(\w+)", key):
            inverse = {v: k for k, v in TORCH_FUSE.items()}
            params["fuse"][f"delta_{inverse.get(m[1], m[1])}"] = value
        elif key in ("fuse.alpha", "fuse.beta"):
            inverse = {v: k for k, v in FUSE_WEIGHT.items()}
            params["fuse"][f"weight_{inverse[key.split('.')[1]]}"] = value.reshape(())
        elif key in ("fuse.ln.weight", "fuse.ln.bias"):
            params["fuse"].setdefault("ln", {})["scale" if key.endswith("weight") else "bias"] = value
        else:
            raise KeyError(f"state_dict key '{key}' has no recgoat_jax counterpart")
    return params


# The parameter groups the PyTorch port (`benchmarks/torch_reference`) has a counterpart for.
_TORCH_GROUPS = ("cf", "fuse")


def jax_to_torch(params: dict) -> dict[str, np.ndarray]:
    """The recgoat_jax params pytree -> a torch-named state_dict of numpy arrays.

    Raises ValueError naming the parameters the PyTorch port has no counterpart for (the user
    side of RecGOAT, `model.user_side = true`: ``user_branch_<m>/...`` and ``user_gate``),
    rather than dropping them.
    """
    p = params
    if "cf" not in p:  # lightgcn / mf
        _refuse_unmapped({k: v for k, v in p.items()
                          if k not in ("embedding_user", "embedding_item")})
        return {"embedding_user.weight": np.asarray(p["embedding_user"]),
                "embedding_item.weight": np.asarray(p["embedding_item"])}
    _refuse_unmapped({k: v for k, v in p.items()
                      if k not in _TORCH_GROUPS and not k.startswith("branch_")})
    sd = {f"cf.{k}.weight": np.asarray(v) for k, v in p["cf"].items()}
    for name, branch in p.items():
        if not name.startswith("branch_"):
            continue
        prefix = _branch_prefix(name.removeprefix("branch_"))
        sd[f"{prefix}.proj.weight"] = np.asarray(branch["proj"]["kernel"]).T
        sd[f"{prefix}.proj.bias"] = np.asarray(branch["proj"]["bias"])
        for layer, gat in branch.items():
            if not layer.startswith("gat_"):
                continue
            base = f"{prefix}.layers.{layer.removeprefix('gat_')}"
            sd[f"{base}.fc.weight"] = np.asarray(gat["kernel"]).T
            sd[f"{base}.attn_l"] = np.asarray(gat["attn_l"])[None]
            sd[f"{base}.attn_r"] = np.asarray(gat["attn_r"])[None]
            sd[f"{base}.bias"] = np.asarray(gat["bias"])
    fuse = p["fuse"]
    for key, value in fuse.items():
        if key.startswith("delta_"):
            m = key.removeprefix("delta_")
            sd[f"fuse.delta_{TORCH_FUSE.get(m, m)}"] = np.asarray(value)
        elif key.startswith("weight_"):
            m = key.removeprefix("weight_")
            sd[f"fuse.{FUSE_WEIGHT.get(m, 'weight_' + m)}"] = np.asarray(value)
    sd["fuse.ln.weight"] = np.asarray(fuse["ln"]["scale"])
    sd["fuse.ln.bias"] = np.asarray(fuse["ln"]["bias"])
    return sd
