"""LLM user profiles as the RecGOAT paper builds them (REFERENCE.md section 8).

1. ``profile_requests``: one prompt per user from the texts of the user's TRAINING items only
   (valid / test items never reach the prompt, so the profile cannot leak the held-out items).
2. An LLM (``llm_backends``) answers each prompt as ``<think>...</think><answer>...</answer>``.
3. ``parse_answers``: read the answers JSONL, extract each ``<answer>`` and report the malformed
   ones by user id; the answer texts are then encoded into ``user_text_feat.npy`` ``[U, dim]``.

JSONL records: prompts ``{"user": dense id, "user_raw": raw id (when the dataset has raw ids),
"items": [dense item ids in the prompt], "prompt": text}``; answers ``{"user": dense id and/or
"user_raw": raw id, "text": the LLM's full output}``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from recgoat_jax.data.dataset import Dataset, DataError
from recgoat_jax.data.text_formats import json_objects

MALFORMED_POLICIES = ("error", "skip")

PROMPT_TEMPLATE = """\
You are analysing the shopping and consumption history of one user of a recommender system.
These are the items the user interacted with:
{items}

Task:
1. List the attributes these items share: category, function, style, material, usage scenario \
and price range.
2. Summarise the user's preferences along four dimensions:
   - Style & Aesthetics
   - Function & Usability
   - Context & Emotion
   - Other (brand loyalty, price sensitivity, sustainability)

Reason step by step inside <think>...</think>, then give the final profile inside \
<answer>...</answer>. Answer exactly in the form <think>...</think><answer>...</answer>."""


@dataclasses.dataclass(frozen=True)
class ProfileRequest:
    """What one user's profile is generated from.

    Attributes:
      user: dense user id.
      user_raw: the raw user id token, or ``None`` when the dataset's ids are already dense.
      items: dense ids of the training items shown in the prompt, in prompt order.
      item_texts: their texts (truncated as in the prompt).
      prompt: the full prompt text.
    """

    user: int
    user_raw: str | None
    items: tuple[int, ...]
    item_texts: tuple[str, ...]
    prompt: str

    def to_json(self) -> dict:
        record = {"user": self.user}
        if self.user_raw is not None:
            record["user_raw"] = self.user_raw
        record["items"] = list(self.items)
        record["prompt"] = self.prompt
        return record


def training_items_by_user(ds: Dataset) -> list[np.ndarray]:
    """``[U]`` list: the items of ``ds.train`` for each user, in the order they appear there."""
    order = np.argsort(ds.train[:, 0], kind="stable")
    users, items = ds.train[order, 0], ds.train[order, 1]
    bounds = np.searchsorted(users, np.arange(ds.n_users + 1))
    return [items[bounds[u]:bounds[u + 1]] for u in range(ds.n_users)]


def build_prompt(item_texts: Sequence[str]) -> str:
    """The paper's profiling prompt for a user whose items have these texts (one per line)."""
    lines = "\n".join(f"{k}. {text}" for k, text in enumerate(item_texts, start=1))
    return PROMPT_TEMPLATE.format(items=lines)


def _shorten(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return text[:max_chars - 3].rstrip() + "..."


def profile_requests(ds: Dataset, item_texts: Sequence[str | None], *, max_items: int = 50,
                     max_chars: int = 300) -> tuple[list[ProfileRequest], list[int]]:
    """One request per user that has at least one training item with a text.

    Args:
      ds: the dataset; only ``ds.train`` is read.
      item_texts: ``[I]``, text of item r or ``None`` (``align_item_texts``).
      max_items: at most this many items per prompt (the last ones in train order; 0 = all).
      max_chars: each item text is cut to this many characters (0 = no cut).
    Returns:
      (requests in dense user order, dense ids of the users left without a prompt).
    """
    if len(item_texts) != ds.n_items:
        raise DataError(f"{ds.source or ds.name}: got {len(item_texts)} item texts for "
                        f"{ds.n_items} items: expected one entry (or None) per item id")
    requests, without_prompt = [], []
    for user, items in enumerate(training_items_by_user(ds)):
        items = [int(i) for i in items if item_texts[i] is not None and item_texts[i].strip()]
        if max_items > 0:
            items = items[-max_items:]
        if not items:
            without_prompt.append(user)
            continue
        texts = tuple(_shorten(item_texts[i], max_chars) for i in items)
        raw = str(ds.raw_user_ids[user]) if ds.raw_user_ids is not None else None
        requests.append(ProfileRequest(user, raw, tuple(items), texts, build_prompt(texts)))
    return requests, without_prompt


# --- answers ------------------------------------------------------------------------------------

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_THINK_END = re.compile(r"</think>", re.IGNORECASE)


def extract_answer(text: str) -> tuple[str | None, str]:
    """The profile inside ``<answer>...</answer>``.

    The reasoning (everything up to the last ``</think>``) is dropped first, so an ``<answer>`` tag
    quoted while thinking is not taken; of several answer blocks the last one counts.
    Returns:
      (answer text stripped, "") or (None, why it is malformed).
    """
    if not isinstance(text, str):
        return None, f"expected a string, got {type(text).__name__}"
    ends = list(_THINK_END.finditer(text))
    after_think = text[ends[-1].end():] if ends else text
    blocks = _ANSWER.findall(after_think)
    if not blocks:
        return None, "no <answer>...</answer> block" + (" after </think>" if ends else "")
    answer = blocks[-1].strip()
    if not answer:
        return None, "empty <answer> block"
    return answer, ""


@dataclasses.dataclass(frozen=True)
class ParsedAnswers:
    """Answers lined up with dense user ids.

    Attributes:
      texts: ``[U]``; entry u is user u's profile text, or ``None`` (no answer, or malformed).
      malformed: ``{dense user id: why}`` for the answers whose text could not be used.
    """

    texts: list[str | None]
    malformed: dict[int, str]


class MalformedAnswersError(DataError):
    """Some answers have no usable ``<answer>``; ``users`` maps their dense ids to the reason."""

    def __init__(self, users: dict[int, str], ds: Dataset, where: str):
        self.users = dict(users)
        shown = [f"user {_user_label(u, ds)}: {why}" for u, why in sorted(users.items())[:20]]
        more = "; ..." if len(users) > 20 else ""
        super().__init__(f"{where}: {len(users)} malformed answer(s) (expected "
                         f"<think>...</think><answer>...</answer>): " + "; ".join(shown) + more +
                         ". Fix or regenerate them, or pass --on-malformed skip")


def _user_label(user: int, ds: Dataset) -> str:
    return f"{user} (raw '{ds.raw_user_ids[user]}')" if ds.raw_user_ids is not None else str(user)


def user_labels(ds: Dataset) -> list[str]:
    """``[U]`` printable user ids (dense, with the raw id when there is one)."""
    return [_user_label(u, ds) for u in range(ds.n_users)]


def _resolve_user(record: dict, ds: Dataset, raw_index: dict[str, int] | None,
                  where: str) -> int:
    dense = record.get("user")
    raw = record.get("user_raw")
    if dense is None and raw is None:
        raise DataError(f"{where}: expected a 'user' (dense id) or 'user_raw' field")
    if raw is not None:
        if raw_index is None:
            raise DataError(f"{where}: 'user_raw' {raw!r} given but dataset '{ds.name}' has no "
                            "raw user ids; use 'user' (dense id)")
        if str(raw) not in raw_index:
            raise DataError(f"{where}: raw user id {raw!r} is not in dataset '{ds.name}'")
        from_raw = raw_index[str(raw)]
        if dense is not None and dense != from_raw:
            raise DataError(f"{where}: 'user' {dense} and 'user_raw' {raw!r} disagree "
                            f"(that raw id is dense user {from_raw})")
        return from_raw
    if isinstance(dense, bool) or not isinstance(dense, int) or not 0 <= dense < ds.n_users:
        raise DataError(f"{where}: 'user' must be an integer in 0..{ds.n_users - 1}, got {dense!r}")
    return dense


def parse_answers(path: str | os.PathLike, ds: Dataset, *, text_field: str = "text",
                  on_malformed: str = "error") -> ParsedAnswers:
    """Read an answers JSONL, extract each ``<answer>`` and line them up with dense user ids.

    Args:
      path: JSONL with ``user`` and/or ``user_raw`` and ``text_field`` per line.
      ds: the dataset the users belong to.
      on_malformed: ``"error"`` raises ``MalformedAnswersError`` listing every malformed answer
        by user id; ``"skip"`` leaves those users without a text (see ``ParsedAnswers``).
    Raises:
      DataError naming the file and line on bad JSON, unknown users or a user answered twice.
    """
    if on_malformed not in MALFORMED_POLICIES:
        raise ValueError(f"on_malformed must be one of {MALFORMED_POLICIES}, got '{on_malformed}'")
    raw_index = ({str(r): u for u, r in enumerate(ds.raw_user_ids)}
                 if ds.raw_user_ids is not None else None)
    texts: list[str | None] = [None] * ds.n_users
    line_of_user: dict[int, int] = {}
    malformed: dict[int, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"answers file not found: {path}") from None
    for lineno, record in json_objects(path, lines):
        where = f"{path}:{lineno}"
        user = _resolve_user(record, ds, raw_index, where)
        if user in line_of_user:
            raise DataError(f"{where}: user {_user_label(user, ds)} already answered on line "
                            f"{line_of_user[user]}: expected one answer per user")
        line_of_user[user] = lineno
        if text_field not in record:
            malformed[user] = f"no '{text_field}' field (line {lineno})"
            continue
        answer, why = extract_answer(record[text_field])
        if answer is None:
            malformed[user] = f"{why} (line {lineno})"
        else:
            texts[user] = answer
    if malformed and on_malformed == "error":
        raise MalformedAnswersError(malformed, ds, str(path))
    return ParsedAnswers(texts, malformed)
