"""Whether the attention-proxy reading (``cue_reading.json``) may be read as evidence of what a class
relies on, as the last control experiment found it.

``python -m dvis_attn_pl control --record`` writes ``proxy_validation.json`` beside this module from
its run: how many species' proxy reading agreed with the causal verdict. Fewer than 4 of 5 (or no
record) labels the proxies **descriptive only**: they describe where attention goes, and make no
claim about what the decision depends on.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["RECORD", "proxy_status", "write_record"]

RECORD = Path(__file__).with_name("proxy_validation.json")
MIN_AGREEING = 4  # of the synthetic set's 5 species


def proxy_status() -> dict:
    """``{"status": "validated" | "descriptive only", "why": ..., ...}`` from the recorded control experiment."""
    try:
        record = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return {"status": "descriptive only", "why": "no control experiment has validated the attention proxies"}
    agree, species = int(record.get("proxy_agrees", 0)), int(record.get("species", 0))
    ok = species > 0 and agree >= min(MIN_AGREEING, species)
    why = (
        f"in the control experiment ({record.get('report', 'docs/control_experiment.md')}) the attention-proxy "
        f"reading agreed with the causal verdict for {agree} of {species} species"
    )
    return {"status": "validated" if ok else "descriptive only", "why": why, **record}


def write_record(goals: dict, report: str) -> Path:
    """Record a control experiment's outcome (maintainers, via ``control --record``)."""
    RECORD.write_text(json.dumps({**goals, "report": report}, indent=1, sort_keys=True) + "\n")
    return RECORD
