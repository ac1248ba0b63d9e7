"""``python -m dvis_attn_pl evaluate``: the YTVIS metric on existing files, as the official tool computes it."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError


def run_evaluate(args: argparse.Namespace) -> int:
    """Print the 12 statistics as the official table (or JSON with ``--json``); bad files exit 2."""
    from ..metrics import evaluate_ytvis
    from ..run_summary import format_table

    try:
        stats = evaluate_ytvis(args.gt, args.results, per_category=not args.json)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps({k: v for k, v in stats.items() if k != "per_category"}))
        return 0
    print(format_table(stats))
    per_category = stats.get("per_category") or {}
    if per_category:
        width = max(len(name) for name in per_category)
        print("\nper-category AP (area all, 100 detections; -1: no ground truth)")
        for name, ap in per_category.items():
            print(f"  {name:<{width}}  {ap:0.3f}")
    return 0
