"""``python -m dvis_attn_pl analyze RUN_DIR``: summaries, plots, videos and TensorBoard events from a run.

Reads only the run directory (and, when it can, the ground-truth json and frames the run names),
never the model. The work is :func:`dvis_attn_pl.analysis.pipeline.run_pipeline`; this module turns
the command-line flags into :class:`~dvis_attn_pl.analysis.pipeline.AnalyzeOptions`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..utils.errors import UserError


def _names(value: str | None, flag: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not items:
        raise UserError(f"{flag} {value!r}: expected a comma-separated list")
    return items


def _ints(value: str | None, flag: str) -> tuple[int, ...] | None:
    items = _names(value, flag)
    if items is None:
        return None
    try:
        out = tuple(int(v) for v in items)
    except ValueError:
        raise UserError(f"{flag} {value!r}: expected comma-separated integers") from None
    if any(v < 0 for v in out):
        raise UserError(f"{flag} {value!r}: layer indices are >= 0")
    return out


def options_from_args(args: argparse.Namespace):
    """The pipeline options of the parsed ``analyze`` arguments (one-line UserError on bad values)."""
    from dataclasses import replace

    from ..analysis.causal_cues import CueThresholds
    from ..analysis.pipeline import AnalyzeOptions

    defaults = AnalyzeOptions()
    given = {k: getattr(args, k, None) for k in ("keep", "drop", "alpha", "max_attraction")}
    thresholds = replace(CueThresholds(), **{k: v for k, v in given.items() if v is not None})
    return AnalyzeOptions(
        only=_names(getattr(args, "only", None), "--only"),
        videos=_names(getattr(args, "videos", None), "--videos"),
        layers=_ints(getattr(args, "layers", None), "--layers"),
        scalings=_names(getattr(args, "scalings", None), "--scalings") or defaults.scalings,
        styles=_names(getattr(args, "styles", None), "--styles") or defaults.styles,
        top_k=getattr(args, "top_k", None) or defaults.top_k,
        compare=Path(args.compare) if getattr(args, "compare", None) else None,
        video=not getattr(args, "no_video", False),
        tensorboard=not getattr(args, "no_tensorboard", False),
        order_by_importance=bool(getattr(args, "order_by_importance", False)),
        cue_thresholds=thresholds,
    )


def run_analyze(args: argparse.Namespace) -> int:
    """Run the ``analyze`` command with the parsed arguments; returns the exit status."""
    from ..analysis.pipeline import run_pipeline
    from ..utils.run_layout import INFERENCE_DIR

    run_dir = Path(args.run_dir)
    report = run_pipeline(run_dir, options_from_args(args))
    counts: dict[str, int] = {}
    for path in report.written:
        rel = path.relative_to(run_dir)
        group = rel.parts[0] if rel.parts[0] != INFERENCE_DIR or len(rel.parts) < 3 else "/".join(rel.parts[:2])
        counts[group] = counts.get(group, 0) + 1
    jsons = [p.name for p in report.written if p.suffix == ".json" and p.parent.name == INFERENCE_DIR]
    parts = [", ".join(jsons)] if jsons else []
    parts += [f"{n} files under {g}/" for g, n in sorted(counts.items()) if g != INFERENCE_DIR]
    print(f"dvis_attn_pl analyze: wrote {'; '.join(parts) or 'nothing'} in {run_dir}", file=sys.stderr)
    causal = next((p for p in report.written if p.name == "causal_cues.json"), None)
    if causal is not None:
        print(_causal_table(json.loads(causal.read_text())))
    return 0


def _causal_table(doc: dict) -> str:
    """The causal verdicts beside the attention-proxy readings, one line per class."""
    lines = [f"{'class':<18} {'designed':<10} {'causal verdict':<22} {'R freeze':>9} {'R shuffle':>9} "
             f"{'attraction':>10}  proxy reading"]
    for row in doc.get("table", []):
        r_f, r_s, a_f = row.get("R_freeze"), row.get("R_shuffle"), row.get("freeze_attraction")
        lines.append(
            f"{str(row['class'])[:18]:<18} {str(row.get('designed_cue') or '-'):<10} {row['verdict']:<22} "
            f"{'-' if r_f is None else f'{r_f:.2f}':>9} {'-' if r_s is None else f'{r_s:.2f}':>9} "
            f"{'-' if a_f is None else f'{a_f:+.2f}':>10}  {row.get('proxy_reading') or '-'}"
        )
    return "\n".join(lines + _faithfulness_lines(doc.get("faithfulness")))


def _faithfulness_lines(faith: dict | None) -> list[str]:
    """The deletion-curve statistics per frame importance (none without a deletion pass)."""
    from ..analysis.causal_cues import faithfulness_rows

    rows = faithfulness_rows(faith)
    if not rows:
        return []
    names = [k for k in rows[0] if k not in ("measure", "reading")]
    lines = ["", f"deletion faithfulness of frame importance ({faith['instances']} predictions; mean [95 % interval "
             "over videos])", f"{'measure':<29}" + "".join(f" {n:<25}" for n in names)]
    lines += [f"{row['measure']:<29}" + "".join(f" {row[n]:<25}" for n in names) for row in rows]
    return lines
