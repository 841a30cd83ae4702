"""Reading an evaluation report: which methods beat which baselines, verdict sentences and tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The metrics that a learned method has to match or exceed against every classical baseline.
BEATS_METRICS = ("psnr", "ssim")
# Column titles used in the protocol's reference table: (first column, following columns).
DISPLAY_NAMES = {
    "telea": ("Telea", "Telea"),
    "ns": ("Navier-Stokes", "NS"),
    "harmonic": ("Harmonic", "Harmonic"),
    "patchmatch": ("PatchMatch", "PatchMatch"),
    "pypatchmatch": ("pypatchmatch", "pypatchmatch"),
}


def beats_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """Whether each learned method's PSNR and SSIM are >= every classical baseline's, in every bucket.

    Returns ``{"baselines": [...], "metrics": ["psnr", "ssim"], "methods": {name: {"beats_all": bool | None,
    "psnr": bool, "ssim": bool, "failures": [...]}}}``; ``beats_all`` is ``None`` when no baseline was run.
    """
    methods = report["methods"]
    baselines = [name for name, method in methods.items() if method["kind"] == "classical"]
    summary: dict[str, Any] = {"baselines": baselines, "metrics": list(BEATS_METRICS), "methods": {}}
    for name, method in methods.items():
        if method["kind"] == "classical":
            continue
        if not baselines:
            summary["methods"][name] = {"beats_all": None, "reason": "no classical baseline was evaluated"}
            continue
        failures = []
        for baseline in baselines:
            for k, bucket in enumerate(report["buckets"]):
                for metric in BEATS_METRICS:
                    ours = method["buckets"][k][metric]["mean"]
                    theirs = methods[baseline]["buckets"][k][metric]["mean"]
                    if ours < theirs:
                        failures.append(
                            {
                                "bucket": bucket["label"],
                                "metric": metric,
                                "value": ours,
                                "baseline": baseline,
                                "baseline_value": theirs,
                            }
                        )
        failed_metrics = {failure["metric"] for failure in failures}
        summary["methods"][name] = {
            "beats_all": not failures,
            **{metric: metric not in failed_metrics for metric in BEATS_METRICS},
            "failures": failures,
        }
    return summary


def _has_texture(method: Mapping[str, Any]) -> bool:
    return all("hf" in bucket and "swd" in bucket for bucket in method["buckets"])


def texture_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """Texture of each learned method against each classical baseline: where its SWD is lower or higher.

    Informational: unlike :func:`beats_summary` it decides nothing. Returns ``{"baselines": [...],
    "methods": {name: {"hf": [per-bucket mean], "swd": [per bucket], "against": {baseline: {"swd_lower":
    [labels], "swd_equal": [...], "swd_higher": [...], "swd_missing": [...]}}}}}``, lower SWD being better.
    Methods without HF/SWD (reports made before these metrics existed) are left out.
    """
    methods = {name: method for name, method in report["methods"].items() if _has_texture(method)}
    baselines = [name for name, method in methods.items() if method["kind"] == "classical"]
    labels = [bucket["label"] for bucket in report["buckets"]]
    summary: dict[str, Any] = {"baselines": baselines, "methods": {}}
    for name, method in methods.items():
        if method["kind"] == "classical":
            continue
        swd = [bucket["swd"] for bucket in method["buckets"]]
        against = {}
        for baseline in baselines:
            theirs = [bucket["swd"] for bucket in methods[baseline]["buckets"]]
            comparison: dict[str, list[str]] = {"swd_lower": [], "swd_equal": [], "swd_higher": [], "swd_missing": []}
            for label, ours, other in zip(labels, swd, theirs, strict=True):
                if ours is None or other is None:
                    comparison["swd_missing"].append(label)
                else:
                    key = "swd_lower" if ours < other else "swd_higher" if ours > other else "swd_equal"
                    comparison[key].append(label)
            against[baseline] = comparison
        summary["methods"][name] = {
            "hf": [bucket["hf"]["mean"] for bucket in method["buckets"]],
            "swd": swd,
            "against": against,
        }
    return summary


def _value_range(values: Sequence[float | None], fmt: str) -> str:
    present = [value for value in values if value is not None]
    if not present:
        return "n/a"
    low, high = fmt.format(min(present)), fmt.format(max(present))
    return low if low == high else f"{low}-{high}"


def _texture_sentence(name: str, report: Mapping[str, Any]) -> str:
    """``" Texture: HF ... ; SWD ..."`` for one learned method, or ``""`` when the report has no HF/SWD."""
    summary = texture_summary(report)
    if name not in summary["methods"]:
        return ""
    texture = summary["methods"][name]
    baseline_hf = [
        f"{baseline} {_value_range([b['hf']['mean'] for b in report['methods'][baseline]['buckets']], '{:.3f}')}"
        for baseline in summary["baselines"]
    ]
    hf = f"HF {_value_range(texture['hf'], '{:.3f}')}"
    if baseline_hf:
        hf += f" against {', '.join(baseline_hf)}"
    if not summary["baselines"]:
        return f" Texture: {hf} (1 = the photo's own fine detail); SWD {_value_range(texture['swd'], '{:.1f}')}."
    # Baselines with the same comparison share one phrase.
    groups: dict[tuple, list[str]] = {}
    for baseline, comparison in texture["against"].items():
        groups.setdefault(tuple(tuple(labels) for labels in comparison.values()), []).append(baseline)
    count = len(report["buckets"])
    phrases = []
    for (lower, equal, higher, missing), names in groups.items():
        target = " and ".join(names)
        if len(lower) == count:
            phrases.append(f"lower (better) than {target} in every bucket")
            continue
        if len(higher) == count:
            phrases.append(f"higher (worse) than {target} in every bucket")
            continue
        pieces = [
            (word, labels)
            for word, labels in (("lower", lower), ("equal", equal), ("higher", higher), ("not computed", missing))
            if labels
        ]
        words, named = [], False
        for word, labels in pieces:
            if not named and word != "not computed":
                word, named = f"{word} {'to' if word == 'equal' else 'than'} {target}", True
            words.append(f"{word} in {', '.join(labels)}")
        phrases.append(" and ".join(words) + ("" if named else f" (against {target})"))
    return f" Texture: {hf} (1 = the photo's own fine detail); SWD {'; '.join(phrases)}."


def verdict_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per learned method: which classical baselines it matches or beats everywhere, and where not.

    The verdict is on PSNR and SSIM (:func:`beats_summary`). When the report has the texture metrics, the
    line goes on with them: the method's HF range against the baselines' and where its SWD is lower
    (better) or higher than each baseline's (:func:`texture_summary`).
    """
    baselines = report["beats"]["baselines"]
    lines = []
    for name, verdict in report["beats"]["methods"].items():
        if verdict["beats_all"] is None:
            lines.append(f"`{name}`: {verdict['reason']}." + _texture_sentence(name, report))
            continue
        lost_to = {failure["baseline"] for failure in verdict["failures"]}
        beaten = [baseline for baseline in baselines if baseline not in lost_to]
        sentence = f"`{name}`"
        if beaten:
            sentence += f" matches or beats {', '.join(beaten)} in PSNR and SSIM in every bucket"
        losses = [
            _losses_against(baseline, verdict["failures"], report) for baseline in baselines if baseline in lost_to
        ]
        if losses:
            sentence += f"{' but' if beaten else ''} does NOT beat {'; '.join(losses)}"
        lines.append(sentence + "." + _texture_sentence(name, report))
    return lines


def _losses_against(baseline: str, failures: Sequence[Mapping[str, Any]], report: Mapping[str, Any]) -> str:
    lost = {(failure["metric"], failure["bucket"]) for failure in failures if failure["baseline"] == baseline}
    parts = []
    for metric in BEATS_METRICS:
        labels = [bucket["label"] for bucket in report["buckets"] if (metric, bucket["label"]) in lost]
        if labels:
            parts.append(f"{metric.upper()} in {', '.join(labels)}")
    return f"{baseline} ({', '.join(parts)})"


# ------------------------------------------------------------------------------------------ tables


def bucket_metric(entry: Mapping[str, Any], metric: str) -> float | None:
    """Value of ``metric`` in one bucket entry: the mean of a per-image metric, or SWD / FID itself (or None)."""
    value = entry[metric]
    return value["mean"] if isinstance(value, Mapping) else value


_TABLE_COLUMNS = (("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("l1", "L1 %", "{:.2f}"))
_TEXTURE_COLUMNS = (("hf", "HF", "{:.3f}"), ("swd", "SWD", "{:.1f}"))
_PERCEPTUAL_COLUMNS = (("lpips", "LPIPS", "{:.4f}"), ("fid", "FID", "{:.2f}"))


def markdown_table(report: Mapping[str, Any]) -> str:
    """The report as a Markdown table in the layout of the protocol's reference table (one row per bucket).

    Per method: PSNR, SSIM, L1 %, then HF and SWD (when the report has them), then LPIPS and FID (when
    computed). A value that could not be computed reads ``n/a``.
    """
    methods = report["methods"]
    labels = [bucket["label"] for bucket in report["buckets"]]
    width = max(len(label) for label in labels)
    header, cells = ["hole ratio"], [[label.ljust(width)] for label in labels]
    for name, method in methods.items():
        first, other = DISPLAY_NAMES.get(name, (name, name))
        columns = [*_TABLE_COLUMNS]
        columns += [*_TEXTURE_COLUMNS] if _has_texture(method) else []
        columns += [c for c in _PERCEPTUAL_COLUMNS if report["perceptual"][c[0]]["computed"]]
        for k, (metric, title, fmt) in enumerate(columns):
            header.append(f"{first if k == 0 else other} {title}")
            for row, bucket in zip(cells, method["buckets"], strict=True):
                value = bucket_metric(bucket, metric)
                row.append("n/a" if value is None else fmt.format(value))
    lines = [header, ["---"] * len(header), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def markdown_report(report: dict[str, Any]) -> str:
    """The table of the protocol's layout plus the verdict on each learned method and the FID/LPIPS status."""
    lines = [
        f"Evaluation protocol v{report['protocol']['version']} on {report['num_images']} images "
        f"of `{report['data']['val_dir_name']}`.",
        "",
        markdown_table(report),
        "",
    ]
    lines += [f"* {line}" for line in verdict_lines(report)]
    if _reports_texture(report):
        lines.append(
            "* Texture (no network): HF = fine detail (finest Laplacian-pyramid level) in the hole relative to the "
            "photo's own, 1 = as much as the photo, a smooth fill is far below 1; SWD = sliced Wasserstein "
            "distance (x 1000) between 7x7 patches of the holes and of the photos, lower is better."
        )
    for metric, status in report["perceptual"].items():
        if not status["computed"]:
            lines.append(f"* {metric.upper()} not computed: {status['reason']}")
    return "\n".join(lines) + "\n"


def _reports_texture(report: Mapping[str, Any]) -> bool:
    return any(_has_texture(method) for method in report["methods"].values())
