"""One module per ``tune`` verb: ``add_parser(subparsers)`` and ``run(args) -> int``."""
