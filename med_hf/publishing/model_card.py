"""Model cards for MEDFE checkpoints, rendered from the project's `MODEL_CARD.md` template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..atomic_files import write_text
from ..configuration_med import MEDConfig

TEMPLATE = Path(__file__).parent / "templates" / "MODEL_CARD.md"
ORIGINAL_WEIGHTS_LICENSE = "cc-by-nc-sa-4.0"
EVALUATE_SCRIPT_URL = "https://github.com/med-hf/med-hf/blob/main/training/evaluate.py"
TAGS = ["inpainting", "image-inpainting", "partial-convolution", "medfe", "med-hf"]
# Pictures a model folder may hold (`training/evaluate.py`, `training/texture_figures.py`,
# `training/removal_figures.py`), shown in its card in
# this order with these captions.
CARD_PICTURES = {
    "removal_examples.png": "Real removals on validation photos at their own size (one of their own objects painted "
    "out): input, the default fill, content-aware fill (pypatchmatch), the smooth fill and Telea",
    "texture_examples.png": "Validation photos: input, the network's smooth fill, the texture fill (the default) "
    "and the ground truth",
    "texture_crops.png": "Full-resolution crops of two photos, input, smooth fill, texture fill and photo: where "
    "texture helps, and where it fails",
    "metrics.png": "PSNR, SSIM, L1, HF and SWD against the hole ratio",
}


def card_pictures(folder: str | Path) -> list[str]:
    """The names of `CARD_PICTURES` that `folder` holds."""
    return [name for name in CARD_PICTURES if (Path(folder) / name).is_file()]


def eval_results(report: Mapping[str, Any], method: str | None = None) -> list[EvalResult]:
    """`model-index` entries (PSNR, SSIM, L1 per hole-ratio bucket) of one learned method of an evaluation report."""
    learned = [name for name, entry in report["methods"].items() if entry["kind"] != "classical"]
    if not learned:
        return []
    method = method or learned[0]
    results = []
    for bucket, metrics in zip(report["buckets"], report["methods"][method]["buckets"], strict=True):
        for metric, pretty in (("psnr", "PSNR"), ("ssim", "SSIM"), ("l1", "L1 (%)")):
            results.append(
                EvalResult(
                    task_type="image-to-image",
                    task_name="Image inpainting",
                    dataset_type="bsds500",
                    # the Hub groups results by task and dataset config: one config per hole-ratio bucket
                    dataset_config=f"irregular-masks-{bucket['label'].replace(' %', '').replace(' ', '')}",
                    dataset_name=f"BSDS500 val, irregular masks {bucket['label']}",
                    dataset_split="val",
                    metric_type=metric,
                    metric_name=pretty,
                    metric_value=round(metrics[metric]["mean"], 4),
                    source_name=f"med-hf evaluation protocol v{report['protocol']['version']}",
                    source_url=EVALUATE_SCRIPT_URL,
                )
            )
    return results


def render_model_card(
    config: MEDConfig,
    *,
    repo_id: str = "path/to/model",
    model_name: str | None = None,
    description: str = "",
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    object_evaluation: Mapping[str, Any] | None = None,
    weights_license: str = ORIGINAL_WEIGHTS_LICENSE,
    pictures: Sequence[str] = (),
) -> ModelCard:
    """A `ModelCard` with metadata (licence, pipeline tag, tags, `model-index` when `evaluation` is a report).

    `training` fills the Training section, one line per entry: the run's record
    (`med_hf.training.record.training_record`), which holds no secret and no local path. `pictures` (names of
    `CARD_PICTURES`, files beside the card) are shown after the evaluation. `object_evaluation`, a report of the
    object-hole set (`training/evaluate.py --masks objects`), gets a table of its own.
    """
    card_data = ModelCardData(
        license=weights_license,
        library_name="transformers",
        pipeline_tag="image-to-image",
        tags=TAGS,
        model_name=model_name or repo_id.split("/")[-1],
        eval_results=eval_results(evaluation) if evaluation else None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name or repo_id.split("/")[-1],
        repo_id=repo_id,
        description=description,
        image_size=config.image_size,
        model_details=_model_details(config),
        training_details=_training_details(training),
        evaluation_details="\n\n".join(
            [
                _evaluation_details(evaluation),
                *([_object_evaluation_details(object_evaluation)] if object_evaluation else []),
                *(f"![{CARD_PICTURES[name]}]({name})" for name in pictures),
            ]
        ),
        weights_license=weights_license,
    )


def write_model_card(folder: str | Path, **kwargs) -> Path:
    """Render the card for the model saved in `folder` (showing the pictures it holds) as `folder/README.md`."""
    folder = Path(folder)
    card = render_model_card(MEDConfig.from_pretrained(folder), pictures=card_pictures(folder), **kwargs)
    target = folder / "README.md"
    write_text(target, str(card))
    return target


# The words for each `MEDConfig.hole_prior`; "harmonic" keeps those the default model's card was written with.
_PRIOR_DESCRIPTIONS = {
    "harmonic": " blending in a harmonic fill of the hole through a learned gate",
    "exact_harmonic": " blending in an exact harmonic (membrane) fill of the hole through a learned gate",
}


def _model_details(config: MEDConfig) -> str:
    variants = (
        "all quirks of the released code mirrored (weight-compatible with the original checkpoints)"
        if config.is_released_variant
        else f"feature mask `{config.feature_mask}`, partial-conv renormalisation `{config.partial_conv_renorm}`, "
        f"equalisation layout `{config.equalization_layout}`"
    )
    lines = [
        f"- Architecture: MEDFE generator, base width {config.base_channels}, "
        f"{config.num_residual_blocks} bottleneck residual blocks, partial-convolution streams "
        f"{config.partial_conv_kernel_sizes} x {config.partial_conv_layers} layers.",
        f"- Variant: {variants}.",
        f"- Working resolution: {config.image_size}x{config.image_size} (any multiple of 64 runs).",
    ]
    if config.refinement_channels:
        prior = _PRIOR_DESCRIPTIONS.get(config.hole_prior, "")
        lines.insert(
            2, f"- Full-resolution refinement head (not in the paper): {config.refinement_channels} channels{prior}."
        )
    return "\n".join(lines)


def _training_details(training: Mapping[str, Any] | None) -> str:
    if not training:
        return "Not recorded."
    return "\n".join(f"- {key.replace('_', ' ').capitalize()}: {value}" for key, value in training.items())


def _evaluation_details(evaluation: Mapping[str, Any] | None) -> str:
    if not evaluation:
        return "No evaluation report was attached to this card."
    from ..evaluation import markdown_table, verdict_lines

    return (
        f"Protocol of med-hf (`training/evaluate.py`): {evaluation['num_images']} BSDS500 validation photos, "
        "centre-cropped and resized to 256x256, one irregular mask (Liu et al. 2018) per photo and hole-ratio "
        "bucket; the known pixels are kept, metrics on the whole image. OpenCV Telea and Navier-Stokes "
        "(radius 3) are run in the same evaluation.\n\n"
        + markdown_table(evaluation)
        + "\n\n"
        + "\n".join(f"- {line}" for line in verdict_lines(evaluation))
    )


def _object_evaluation_details(evaluation: Mapping[str, Any]) -> str:
    from ..evaluation import markdown_table, verdict_lines

    return (
        f"Object removal (`training/evaluate.py --masks objects`): the same {evaluation['num_images']} photos, each "
        "with the shape of an object from the BSDS500 train segmentations (dilated by a 9x9 brush) as its hole, "
        "per hole-ratio bucket; the photo under the hole is known.\n\n"
        + markdown_table(evaluation)
        + "\n\n"
        + "\n".join(f"- {line}" for line in verdict_lines(evaluation))
    )
