"""``evaluate_ytvis``: the official YTVIS statistics for a ground-truth file and a results file."""

from __future__ import annotations

from .video_ap import STAT_NAMES, evaluate_records, per_category_ap, summarize
from .ytvis_inputs import load_ground_truth, load_results, video_record


def evaluate_ytvis(gt, results, per_category: bool = False) -> dict:
    """The 12 statistics ``AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl`` as floats.

    ``gt`` and ``results`` are paths or loaded json. With ``per_category`` the dict also holds
    ``"per_category": {category name: AP}`` (-1 for categories without ground truth). Bad input
    raises ``ValueError`` with a one-line message naming the file and the problem.
    """
    truth = load_ground_truth(gt)
    dets = load_results(results, truth)
    records = [video_record(video, dets.get(vid, [])) for vid, video in sorted(truth.videos.items())]
    arrays = evaluate_records(records, truth.category_ids)
    stats = summarize(arrays["precision"], arrays["recall"])
    out = {name: stats[name] for name in STAT_NAMES}
    if per_category:
        aps = per_category_ap(arrays["precision"], truth.category_ids)
        out["per_category"] = {truth.category_names[c]: ap for c, ap in aps.items()}
    return out
