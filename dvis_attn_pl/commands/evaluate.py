"""``python -m dvis_attn_pl evaluate``: the YTVIS metric on existing files, as the official tool computes it."""

from __future__ import annotations

import argparse
import json

from ..utils.errors import UserError


def run_evaluate(args: argparse.Namespace) -> int:
    """Score ``args.results`` against ``args.gt``.

    Prints the official 12-line summary followed by per-category AP, or with ``args.json`` one
    JSON object holding exactly the 12 statistics. A malformed or inconsistent file raises
    :class:`~dvis_attn_pl.utils.errors.UserError` (the command line prints it as one line, exit 2).
    """
    from ..metrics import evaluate_ytvis
    from ..metrics.ytvis_eval import STAT_NAMES, summary_lines

    try:
        stats = evaluate_ytvis(args.gt, args.results, per_category=not args.json)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps({name: stats[name] for name in STAT_NAMES}))
        return 0
    print("\n".join(summary_lines(stats)))
    per_category = stats["per_category"]
    if per_category:
        width = max(len(name) for name in per_category)
        print("\nper-category AP (IoU=0.50:0.95, area all, maxDets 100; -1: no ground truth)")
        for name, ap in per_category.items():
            print(f"  {name:<{width}}  {ap:0.3f}")
    return 0
