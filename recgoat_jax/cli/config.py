"""`recgoat-jax config show | keys | presets`: the resolved configuration, every key with one
line of help, and the presets shipped in the package."""

from __future__ import annotations

from recgoat_jax import config as config_lib
from recgoat_jax.cli.common import add_config_and_data_args, data_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="show the resolved config, list its keys or presets")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    commands = (
        ("show", "the resolved config as TOML, each key with its default and help", show),
        ("keys", "every config key, its default, allowed values and one line of help", keys),
        ("presets", "configs shipped in the package (--config NAME)", presets))
    for name, help, func in commands:
        s = config_sub.add_parser(name, help=help)
        if func is show:
            add_config_and_data_args(s)
        s.set_defaults(func=func)


def show(args) -> int:
    cfg = config_lib.load(args.config, data_overrides(args) + list(args.set or []))
    print(config_lib.dumps(cfg, comment_defaults=True), end="")
    return 0


def keys(args) -> int:
    rows = config_lib.fields_table()
    width = max(len(key) for key, _, _ in rows)
    for key, default, meta in rows:
        allowed = meta.get("choices") or ()
        allowed = allowed() if callable(allowed) else allowed
        rule = meta.get("rule") or meta.get("each")
        extra = (f"; one of {', '.join(map(repr, allowed))}" if allowed
                 else f"; {rule.text}" if rule else "")
        print(f"{key:<{width}}  {config_lib.toml_value(default):<14} {meta['help']}{extra}")
    return 0


def presets(args) -> int:
    for name in config_lib.packaged_presets():
        print(name)
    return 0
