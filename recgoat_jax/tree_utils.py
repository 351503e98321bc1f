"""Nested dicts <-> flat dicts with joined keys ({"a": {"b": x}} <-> {"a/b": x})."""

from __future__ import annotations

from typing import Any


def flatten(tree: dict, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """{"a": {"b": x}, "c": y} -> {"a/b": x, "c": y}; leaves are every non-dict value, kept as
    they are; keys are joined with `sep` (and start with `prefix` + `sep` when a prefix is
    given). Empty sub-dicts vanish."""
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{sep}{k}" if prefix else str(k)
            if isinstance(v, dict):
                walk(v, key)
            else:
                out[key] = v

    walk(tree, prefix)
    return out


def unflatten(flat: dict[str, Any], sep: str = "/") -> dict:
    """The inverse of `flatten`: {"a/b": x} -> {"a": {"b": x}}."""
    out: dict = {}
    for key, v in flat.items():
        *parents, leaf = key.split(sep)
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out
