"""The control experiment's report: designed cue vs causal verdict vs attention-proxy reading, per species.

Input: the ``causal_cues.json`` of up to three runs of the synthetic val split with every
intervention — the shipped trained model, the same model with random weights (sanity check: no
confident verdict), and a control model whose refiner was trained on frame-shuffled clips (sanity
check: never "ordered motion"). Output: a Markdown report and a plot of R per species and
intervention with 95 % intervals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..utils.temporal_record import DELETION_IMPORTANCE_FIRST, DELETION_LEAST_FIRST, DELETION_RANDOM_MEAN
from .causal_cues import faithfulness_orderings, faithfulness_rows

__all__ = [
    "CONFIDENT", "designed_matches", "goal_summary", "plot_deletion", "plot_ratios", "probe_lines", "render_report",
]

CONFIDENT = ("appearance", "frame-set integration", "ordered motion", "mixed")
_DESIGNED = {"appearance": {"appearance"}, "motion": {"frame-set integration", "ordered motion"}}


def designed_matches(designed: str | None, verdict: str) -> bool:
    """Whether a causal verdict is the species' designed cue (motion: either temporal verdict)."""
    return verdict in _DESIGNED.get(designed or "", set())


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ratio_cell(row: dict | None) -> str:
    if not row or row.get("R") is None:
        return "–"
    ci = row.get("ci95")
    inner = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{row['R']:.2f}{inner} {row.get('status', '')}".strip()


def goal_summary(trained: dict) -> dict[str, Any]:
    """Counts the issue's goals are judged on."""
    classes = trained["classes"].values()
    matches = sum(designed_matches(c.get("designed_cue"), c["verdict"]) for c in classes)
    agrees = sum(c.get("proxy_agrees") is True for c in classes)
    return {"species": len(trained["classes"]), "verdict_is_designed_cue": matches, "proxy_agrees": agrees}


def _what_instead(c: dict) -> str:
    """What the model uses instead of the designed cue, from the evidence in the row."""
    un, freeze = c["unaltered"], c["interventions"].get("freeze") or {}
    if c["verdict"] == "not recognised":
        return (f"the unaltered model gives its objects a mean class probability of {_fmt(un.get('mean_p'))} "
                f"(n={un['n_objects']}): it has not learnt this species, so there is nothing to attribute.")
    if c["verdict"] == "appearance":
        return (f"one repeated frame keeps the class (R freeze {_ratio_cell(freeze)}): the model reads this species "
                "from single frames.")
    attraction = freeze.get("attraction") or {}
    if c["verdict"] == "undetermined" and freeze.get("status") == "keeps" and attraction.get("mean") is not None:
        return (f"one repeated frame keeps the class (R freeze {_ratio_cell(freeze)}), but it also pulls the other "
                f"species' objects towards it (attraction {_attraction_cell(freeze)}): the model reads a frozen clip as "
                "this species whatever the fish, so its cue is not one frame's appearance; freeze cannot say which motion.")
    if c["verdict"] == "undetermined":
        return (f"the evidence does not decide (R freeze {_ratio_cell(freeze)}, "
                f"R shuffle {_ratio_cell(c['interventions'].get('shuffle'))}); more videos narrow the intervals.")
    return f"{c['reason']}."


def _trajectory_note(probes: dict[str, dict] | None) -> str:
    """Why a motion species may go unrecognised, from the trained model's trajectory separability (or "")."""
    sep = ((probes or {}).get("trained") or {}).get("separability")
    if not sep:
        return ""
    acc = {kind: _fmt(row["accuracy"]) for kind, row in sep["kinds"].items()}
    return (f" What its inputs allow: a read-out of the trajectory names the right look-alike for {acc['frame']} of "
            f"the motion tracks from the frame queries and {acc['instance']} from the instance queries (from the true "
            f"path {acc['true']}; chance {sep['chance']:.2f}; see the position probe below).")


def _attraction_cell(row: dict | None) -> str:
    a = (row or {}).get("attraction") or {}
    if a.get("mean") is None:
        return "–"
    ci = a.get("ci95")
    return f"{a['mean']:+.2f}" + ("" if not ci else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]")


def _r2_cell(values: list[float] | None) -> str:
    return "–" if not values else " / ".join(f"{v:.2f}" for v in values)


def probe_lines(probes: dict[str, dict]) -> list[str]:
    """The report's section on what the refiner can see (``training.input_probe.decodability`` per model)."""
    first = next(iter(probes.values()))
    lines = ["", "## What the refiner can see (position probe)", "",
             "The refiner decides the class from each track's per-frame instance queries and, through",
             "cross-attention, the segmenter's queries of the same frame; neither carries a position encoding.",
             "A ridge regression from each to the fish's mask centroid (and from its change over",
             f"{first['lag']} frames to the fish's displacement over them), cross-validated over videos, says",
             "whether a trajectory is there to be read: held-out R^2 1 = exact, 0 = no better than the mean",
             "(`dvis_attn_pl/training/input_probe.py`). A linear read-out is a lower bound: a low R^2 says the",
             "trajectory is not simply there, not that no refiner could compute it.", "",
             "| model | input | tracks (videos) | frames | position R^2 x / y | displacement R^2 dx / dy |",
             "|---|---|---|---|---|---|"]
    for name, p in probes.items():
        for row in p["sources"].values():
            lines.append(f"| {name} | {row['title']} | {p['tracks']} ({p['videos']}) | {row['frames']} "
                         f"| {_r2_cell(row['position_r2'])} | {_r2_cell(row['displacement_r2'])} |")
    separable = {name: p["separability"] for name, p in probes.items() if p.get("separability")}
    if separable:
        first_sep = next(iter(separable.values()))
        lines += ["", "Could the motion species be told apart from the trajectory at all? Per track, six",
                  "motion features of its trajectory (spread of x and y; median and 90th-percentile step in x",
                  "and in y) classified by the nearest species mean fitted on the other video folds",
                  f"(`trajectory_separability`; tracks with at least {first_sep['min_frames']} usable frames;",
                  f"chance {first_sep['chance']:.2f}). The true trajectory says what a perfect position read-out",
                  "would allow; the decoded ones, what the refiner's inputs allow a simple read-out.", "",
                  "| model | trajectory | motion tracks scored | right species |", "|---|---|---|---|"]
        for name, sep in separable.items():
            for kind in sep["kinds"].values():
                acc = "–" if kind["accuracy"] is None else f"{kind['accuracy']:.2f}"
                lines.append(f"| {name} | {kind['title']} | {kind['scored']} | {acc} |")
    return lines


def render_report(
    runs: dict[str, dict], command: str, plot_name: str | None, deletion_plot: str | None = None,
    split: str = "the synthetic val split", probes: dict[str, dict] | None = None,
) -> str:
    """Markdown for ``runs`` (``trained`` required; ``random`` and ``control`` optional) and the
    position ``probes`` of :mod:`dvis_attn_pl.training.input_probe` (per model, optional)."""
    trained = runs["trained"]
    labels = sorted({k for c in trained["classes"].values() for k in c["interventions"]})
    goals = goal_summary(trained)
    lines = [
        "# Control experiment: does the appearance-or-motion verdict tell the truth?",
        "",
        f"Regenerated by `{command}` on {split}; every number below is read from the runs' `causal_cues.json`.",
        "",
        "The synthetic fish set plants the cue of each species: two species differ only in how they look",
        "(same motion model), three share one appearance and differ only in how they move. The causal",
        "verdict comes from interventions (see `docs/interventions.md`): R is the class probability after",
        "the intervention over the class probability unaltered, for the same objects, with a 95 % bootstrap",
        "interval over videos; statuses are one-sided tests Holm-adjusted across species. Freeze attraction:",
        "how much freezing moves the *other* species' objects towards this species (mean gain of its",
        "probability, 95 % interval); a species that keeps R under freeze while attracting the others is",
        "not read as appearance.",
        "",
        "## Summary",
        "",
        f"- Causal verdict = designed cue: **{goals['verdict_is_designed_cue']} of {goals['species']}** species.",
        f"- Attention-proxy reading agrees with the causal verdict: **{goals['proxy_agrees']} of "
        f"{goals['species']}**" + (" (the proxies are labelled descriptive only)" if goals["proxy_agrees"] < 4 else "") + ".",
        f"- Unaltered AP of the trained model on this split: {_fmt(trained.get('unaltered_AP'), 3)}.",
        "",
        "## Per species (trained model)",
        "",
        "| species | designed cue | causal verdict | p unaltered | " + " | ".join(f"R {k}" for k in labels)
        + " | freeze attraction | attention proxies | agree |",
        "|" + "---|" * (7 + len(labels)),
    ]
    for c in trained["classes"].values():
        un = c["unaltered"]
        cells = [_ratio_cell(c["interventions"].get(k)) for k in labels]
        agree = {True: "yes", False: "no", None: "–"}[c.get("proxy_agrees")]
        lines.append(
            f"| {c['name']} | {c.get('designed_cue') or '–'} | **{c['verdict']}** | {_fmt(un.get('mean_p'))} "
            f"(n={un['n_objects']}) | " + " | ".join(cells) + f" | {_attraction_cell(c['interventions'].get('freeze'))} "
            f"| {c.get('proxy_reading') or '–'} | {agree} |"
        )
    lines += ["", "Why each verdict:", ""]
    lines += [f"- {c['name']}: {c['reason']}." for c in trained["classes"].values()]
    differing = [c for c in trained["classes"].values()
                 if c.get("designed_cue") and not designed_matches(c.get("designed_cue"), c["verdict"])]
    if differing:
        lines += ["", "## Where the verdict is not the designed cue", ""]
        inputs_note = _trajectory_note(probes)
        for c in differing:
            note = inputs_note if c["verdict"] == "not recognised" and c.get("designed_cue") == "motion" else ""
            lines.append(f"- **{c['name']}** (designed: {c['designed_cue']}; verdict: {c['verdict']}): "
                         + _what_instead(c) + note)
    if plot_name:
        lines += ["", f"![R per species and intervention]({plot_name})"]
    if probes:
        lines += probe_lines(probes)
    faith = trained.get("faithfulness")
    if faith:
        rows = faithfulness_rows(faith)
        columns = list(rows[0])
        lines += ["", "## Faithfulness of frame importance (deletion curves)", "",
                  f"{faith['instances']} predictions scored >= 0.5; frames removed from the refiner's input in the order "
                  f"of each frame importance (pooling weights: {faith['importance']}; rollout: "
                  f"{faith.get('rollout_importance', 'not recorded in this run')}); mean and 95 % interval over videos.",
                  "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
        lines.append("")
        for name, doc in faithfulness_orderings(faith):
            excludes = (doc["area_random_minus_importance"].get("ci95") or [0, 0])[0] > 0
            lines.append(f"- {name}: importance-ordered deletion beats random deletion with an interval that excludes 0: "
                         + ("**yes**." if excludes else "**no**."))
        if deletion_plot:
            lines += ["", f"![mean deletion curves]({deletion_plot})"]
    lines += ["", "## Passes", "", "| pass | objects | matched | match rate | AP |", "|---|---|---|---|---|"]
    for label, p in trained["passes"].items():
        if p["intervention"].get("family") == "probe":
            continue  # the deletion probe matches nothing: see the faithfulness section
        lines.append(f"| {label} | {p['objects']} | {p['matched']} | {_fmt(p['match_rate'])} | {_fmt(p['AP'], 3)} |")
    lines += ["", "An object the altered pass does not find (IoU < 0.5) is not a pair: its class change is unknown,",
              "not zero. A low match rate (silhouette) means the model does not segment the altered video at all."]
    lines += ["", "## Sanity checks", ""]
    for key, title, rule in (
        ("random", "Random weights (same config, first 12 videos at most)", lambda v: v not in CONFIDENT),
        ("control", "Control model (refiner trained on frame-shuffled clips)", lambda v: v != "ordered motion"),
    ):
        run = runs.get(key)
        if run is None:
            lines.append(f"- {title}: not run.")
            continue
        verdicts = {c["name"]: c["verdict"] for c in run["classes"].values()}
        ok = all(rule(v) for v in verdicts.values())
        shown = ", ".join(f"{k}: {v}" for k, v in verdicts.items())
        lines.append(f"- {title}: {'passes' if ok else 'FAILS'} ({shown}).")
    lines.append("")
    return "\n".join(lines)


def plot_ratios(trained: dict, path: Path) -> None:
    """R with its interval per species (groups) and intervention (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = list(trained["classes"].values())
    labels = sorted({k for c in classes for k in c["interventions"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(classes)), 3.6), dpi=110)
    width = 0.8 / max(len(labels), 1)
    for j, label in enumerate(labels):
        xs, ys, lo, hi = [], [], [], []
        for i, c in enumerate(classes):
            row = c["interventions"].get(label) or {}
            if row.get("R") is None:
                continue
            ci = row.get("ci95") or [row["R"], row["R"]]
            xs.append(i - 0.4 + (j + 0.5) * width)
            ys.append(row["R"])
            lo.append(row["R"] - ci[0])
            hi.append(ci[1] - row["R"])
        ax.bar(xs, ys, width, yerr=[lo, hi] if xs else None, label=label, capsize=2)
    for y, style in ((0.9, "--"), (0.5, ":")):
        ax.axhline(y, color="k", linestyle=style, linewidth=0.8)
    ax.set_xticks(np.arange(len(classes)))
    ax.set_xticklabels([f"{c['name']}\n({c.get('designed_cue') or '?'})" for c in classes], fontsize=8)
    ax.set_ylabel("R = p(altered) / p(unaltered)")
    ax.set_ylim(0, 2)
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_deletion(trained: dict, path: Path) -> bool:
    """Mean class probability against the removed fraction, per removal order and frame importance
    (pooling weights solid, rollout readouts dashed; False: no deletion pass)."""
    faith = trained.get("faithfulness")
    if not faith:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=110)
    ax.plot(faith["fractions"], faith["mean_curves"][DELETION_RANDOM_MEAN], color="0.5", label="random order")
    for i, (name, doc) in enumerate(faithfulness_orderings(faith)):
        for key, when, marker in ((DELETION_IMPORTANCE_FIRST, "most important first", "o"),
                                  (DELETION_LEAST_FIRST, "least important first", "x")):
            ax.plot(doc["fractions"], doc["mean_curves"][key], linestyle="-" if i == 0 else "--", marker=marker,
                    markersize=3, label=f"{name}: {when}")
    ax.set_xlabel("fraction of frames removed from the refiner's input")
    ax.set_ylabel("p(predicted class)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
