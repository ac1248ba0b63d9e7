"""Command bodies: ``dvis_attn_pl.commands.<name>.run_<name>(args) -> int | None``.

``cli.main`` parses and checks the arguments (paths exist, overrides are pairs, the model config
loads) and imports the module only when its command runs. A body raises ``UserError`` for user
mistakes (printed as one line, exit 2); ``NotImplementedError`` means "not available yet".
"""
