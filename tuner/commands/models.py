"""``tune models list|show NAME``: the model presets (or any config.json)."""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list or show model presets")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="list presets with parameter counts")
    common.add_json_arg(listing)
    show = sub.add_parser("show", help="show one model (preset name or config.json path)")
    show.add_argument("name")
    common.add_json_arg(show)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from simulator.data.models import describe_model, get_model, list_models, parameter_counts
    from tuner.textfmt import key_values, table

    if args.action == "list":
        models = [get_model(name) for name in list_models()]
        if args.json:
            common.print_json([m.model_dump(mode="json") for m in models])
            return 0
        rows = []
        for m in models:
            counts = parameter_counts(m)
            rows.append(
                (
                    m.name,
                    m.num_hidden_layers,
                    m.hidden_size,
                    f"{m.num_attention_heads}/{m.num_key_value_heads}",
                    f"{counts.total / 1e9:,.2f}B",
                    f"{counts.active_per_token / 1e9:,.2f}B",
                    f"{m.num_local_experts or '-'}",
                )
            )
        print(table(["name", "layers", "hidden", "heads/kv", "params", "active", "experts"], rows))
        return 0
    model = get_model(args.name)
    if args.json:
        common.print_json(model.model_dump(mode="json"))
    else:
        print(key_values(describe_model(model), title=model.name))
    return 0
