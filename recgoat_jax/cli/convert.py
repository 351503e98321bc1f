"""`recgoat-jax convert --to jax|torch IN OUT`: the public PyTorch code's state_dict (.pt)
<-> recgoat_jax parameters (.npz); the mapping is `recgoat_jax.convert`."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from recgoat_jax.cli.common import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="torch state_dict (.pt) <-> recgoat_jax params (.npz)")
    p.add_argument("--to", choices=["jax", "torch"], required=True,
                   help="jax: read a .pt state_dict, write .npz params; torch: the reverse")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=run)


def run(args) -> int:
    from recgoat_jax.convert import jax_to_torch, torch_to_jax
    from recgoat_jax.io_utils import atomic_write_bytes
    from recgoat_jax.tree_utils import flatten, unflatten

    try:
        import torch
    except ImportError:
        raise CliError("recgoat-jax convert needs torch: pip install 'recgoat-jax[bench]'") \
            from None
    source = Path(args.input)
    if source.is_dir():
        raise CliError(f"{args.input}: is a folder, expected a "
                       f"{'.pt state_dict' if args.to == 'jax' else '.npz of parameters'}")
    buf = io.BytesIO()
    if args.to == "jax":
        sd = _read_state_dict(torch, source)
        try:
            params = torch_to_jax(sd)
            unknown = sorted(set(sd) - set(jax_to_torch(params)))
        except (ValueError, KeyError) as e:
            raise CliError(f"{args.input}: not a state_dict of the public RecGOAT code ({e})") \
                from None
        if unknown:
            raise CliError(f"{args.input}: keys this converter does not know: {unknown[:8]}"
                           f"{' ...' if len(unknown) > 8 else ''} (expected the state_dict of "
                           "the public code's lgn_mm or lgn model)")
        np.savez(buf, **flatten(params))
    else:
        try:
            with np.load(source, allow_pickle=False) as f:
                params = unflatten({k: f[k] for k in f.files})
        except (ValueError, OSError, zipfile.BadZipFile, AttributeError) as e:
            raise CliError(f"{args.input}: not a .npz of parameters ({e})") from None
        try:
            mapped = jax_to_torch(params)
        except (ValueError, KeyError) as e:
            raise CliError(f"{args.input}: {e}") from None
        # np.array(order="C"), not np.ascontiguousarray: the latter turns the 0-d fuse.alpha /
        # fuse.beta into shape [1], which load_state_dict(strict=True) rejects
        torch.save({k: torch.from_numpy(np.array(v, dtype=np.float32, order="C"))
                    for k, v in mapped.items()}, buf)
    atomic_write_bytes(args.output, buf.getvalue())
    print(f"wrote {args.output}")
    return 0


def _read_state_dict(torch, path: Path) -> dict:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CliError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise CliError(f"{path}: not a torch state_dict (.pt): {str(e).splitlines()[0]}") \
            from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(hasattr(v, "shape") for v in sd.values()):
        raise CliError(f"{path}: holds a {type(sd).__name__}, expected a state_dict (names -> "
                       "tensors)")
    return sd
