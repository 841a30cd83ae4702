#!/usr/bin/env python
"""Train or fine-tune MEDFE with 🤗 Accelerate on a streamed 🤗 dataset.

One process:

    python training/train.py --train_data_dir photos/ --mask_dir masks/ --model_config tiny \
        --output_dir runs/tiny --max_train_steps 1000

Several processes (GPUs with `accelerate launch`, or two CPU processes with gloo):

    accelerate launch training/train.py ...
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 --master_addr 127.0.0.1 training/train.py ...

The generator is a `MEDModel`; two spectral-norm PatchGANs (global on the image, local on a 64x64 crop)
provide the relativistic LSGAN loss when `--gan_weight > 0`. Checkpoints are `output_dir/checkpoint-N`
folders written by `accelerator.save_state`; `--resume_from_checkpoint latest` continues with the same data
order and random draws, so a killed and resumed run ends with the weights of an uninterrupted one.

Validation runs a fixed set of images through `MEDInpaintPipeline` and scores it with the evaluation's metrics,
so its numbers measure the code users call. At the end the generator is saved with a model card holding the
run's training record (`med_hf.training.record`); `--push_to_hub` publishes the folder as `med-publish` does.

`main` reads as the steps of a run: the accelerator, the networks and their optimizers, the data, the loop of
training steps with its checkpoint and validation hooks, and the finish (save, card, push).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from med_hf import MEDConfig, MEDModel
from med_hf.atomic_files import apply_umask_modes, write_text
from med_hf.configuration_med import HOLE_PRIORS
from med_hf.evaluation import PipelineInpainter, keep_known, l1_percent, masked_input, protocol_mask_names, psnr
from med_hf.publishing.hub import PublishError, check_repo_id, publish
from med_hf.publishing.model_card import write_model_card
from med_hf.training.data import (
    SampleTransform,
    StreamPosition,
    StructureCache,
    TrainingBatches,
    load_streaming_dataset,
    shard_for_process,
)
from med_hf.training.discriminator import MEDDiscriminator
from med_hf.training.losses import (
    PerceptualStyleLoss,
    VGG16Features,
    differentiable_ssim,
    hole_area_weights,
    reconstruction_loss,
    relativistic_discriminator_loss,
    relativistic_generator_loss,
)
from med_hf.training.masks import MaskFolder, MaskSampler, ObjectShapes
from med_hf.training.record import is_secret, training_record, write_training_arguments
from med_hf.training.rtv import BORDERS, DEFAULT_BORDER

logger = get_logger(__name__)

LOCAL_CROP = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train MEDFE (Mutual Encoder-Decoder with Feature Equalizations).")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", help="🤗 dataset: Hub id or builder (imagefolder, webdataset, parquet)")
    data.add_argument("--dataset_config_name")
    data.add_argument("--train_data_dir", help="local folder of training photos (or data_dir of --dataset_name)")
    data.add_argument("--image_column", default="image")
    data.add_argument("--cache_dir")
    data.add_argument("--resolution", type=int, default=256, help="square training crops; a multiple of 64")
    data.add_argument("--random_scale", type=float, nargs=2, default=(1.0, 1.0), metavar=("MIN", "MAX"),
                      help="shorter side resized to resolution * U(MIN, MAX) before cropping")  # fmt: skip
    data.add_argument("--no_random_flip", action="store_true")
    data.add_argument("--shuffle_buffer_size", type=int, default=1000)
    data.add_argument("--mask_dir", help="folder of hole masks (white = hole)")
    data.add_argument("--mask_exclude_eval", type=int, default=0, metavar="N",
                      help="never train on the masks the evaluation protocol uses for N validation images")  # fmt: skip
    data.add_argument("--mask_ratios", default="free_form=0.5,box=0.1,folder=0.4",
                      help="mix of mask sources: free_form, box, centre_box, folder, objects")  # fmt: skip
    data.add_argument("--segmentation_dir",
                      help="train label maps <photo id>_<annotator>.png whose object shapes the 'objects' source "
                      "draws (BSDS500 segmentations/train)")  # fmt: skip
    data.add_argument("--structure_cache_dir", help="disk cache of RTV structure images (default: memory only)")
    data.add_argument(
        "--structure_border",
        choices=list(BORDERS),
        default=DEFAULT_BORDER,
        help="border of RTV's Gaussian: 'zero' pads with zeros like the authors' MATLAB conv2(..., 'same'); "
        "'replicate' repeats the edge pixels",
    )
    data.add_argument("--no_structure", action="store_true", help="skip RTV targets (structure loss off)")

    model = parser.add_argument_group("model")
    model.add_argument("--model_config", default="released",
                       help="preset name (released, tiny, small) or a config.json")  # fmt: skip
    model.add_argument("--init_from", help="model folder or Hub repo to fine-tune")
    model.add_argument("--refinement_channels", type=int,
                       help="add (or resize) the full-resolution refinement head; default: as configured")  # fmt: skip
    model.add_argument("--hole_prior", choices=HOLE_PRIORS,
                       help="the smooth fill of the hole the refinement head blends in: harmonic = the approximate "
                            "push-pull membrane the default model was trained with, exact_harmonic = the converged "
                            "membrane (new models)")  # fmt: skip

    loss = parser.add_argument_group("losses (defaults: the released recipe)")
    loss.add_argument("--l1_weight", type=float, default=1.0)
    loss.add_argument("--hole_weight", type=float, default=1.0, help="L1 weight factor inside the hole")
    loss.add_argument("--valid_weight", type=float, default=1.0, help="L1 weight factor outside the hole")
    # Q8 below is released quirk Q8 of docs/released_quirks.md: the released code counts the auxiliary loss 3 times.
    loss.add_argument("--aux_weight", type=float, default=3.0,
                      help="auxiliary branch loss; 3 reproduces the released code's double counting (Q8)")  # fmt: skip
    loss.add_argument("--perceptual_weight", type=float, default=0.2)
    loss.add_argument("--style_weight", type=float, default=250.0)
    loss.add_argument("--gan_weight", type=float, default=0.2)
    loss.add_argument("--ssim_weight", type=float, default=0.0, help="1 - SSIM on the composite (not in the recipe)")
    loss.add_argument("--weight_by_hole_area", action="store_true",
                      help="weigh samples' L1 and SSIM terms by 1 / hole area, as per-image metrics do")  # fmt: skip
    loss.add_argument("--vgg16_weights", help="local VGG16 weights file or Hub id[:filename] (perceptual/style)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--train_batch_size", type=int, default=1)
    optim.add_argument("--max_train_steps", type=int, default=10000)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--learning_rate", type=float, default=2e-4)
    optim.add_argument("--discr_learning_rate", type=float, help="defaults to --learning_rate")
    optim.add_argument("--adam_beta1", type=float, default=0.5)
    optim.add_argument("--adam_beta2", type=float, default=0.999)
    optim.add_argument("--adam_weight_decay", type=float, default=0.0)
    optim.add_argument("--lr_scheduler", default="constant", choices=["constant", "linear", "cosine"])
    optim.add_argument("--lr_warmup_steps", type=int, default=0)
    optim.add_argument("--max_grad_norm", type=float, default=0.0, help="0 disables clipping")
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    optim.add_argument("--seed", type=int, default=0)

    run = parser.add_argument_group("checkpoints, logging, Hub")
    run.add_argument("--output_dir", required=True)
    run.add_argument("--checkpointing_steps", type=int, default=500)
    run.add_argument("--checkpoints_total_limit", type=int)
    run.add_argument("--resume_from_checkpoint", help="'latest' or a checkpoint folder")
    run.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all or none")
    run.add_argument("--logging_dir", default="logs", help="relative to --output_dir")
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--validation_steps", type=int, default=500)
    run.add_argument("--validation_data_dir", help="folder of validation photos (default: first training photos)")
    run.add_argument("--num_validation_images", type=int, default=4)
    run.add_argument("--push_to_hub", action="store_true",
                     help="publish the trained model as med-publish does (remote code, model card)")  # fmt: skip
    run.add_argument("--hub_model_id", metavar="ORG/NAME")
    run.add_argument("--hub_token", help="Hub token with write access (never written to the output folder)")
    run.add_argument("--hub_private_repo", action="store_true")
    args = parser.parse_args(argv)

    if not args.dataset_name and not args.train_data_dir:
        parser.error("give --dataset_name or --train_data_dir")
    if args.resolution % 64 or args.resolution < LOCAL_CROP:
        parser.error(f"--resolution must be a multiple of 64, got {args.resolution}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    if args.hub_model_id:
        try:  # now, not after hours of training
            check_repo_id(args.hub_model_id, "--hub_model_id")
        except PublishError as error:
            parser.error(str(error))
    return args


def build_config(name_or_path: str, **overrides) -> MEDConfig:
    path = Path(name_or_path)
    if path.suffix == ".json" or path.is_file():
        config = MEDConfig.from_json_file(path)
        config.update(overrides)
        return config
    return MEDConfig.from_preset(name_or_path, **overrides)


def build_mask_sampler(args: argparse.Namespace) -> MaskSampler:
    weights = {}
    for item in args.mask_ratios.split(","):
        name, _, value = item.partition("=")
        weights[name.strip()] = float(value)
    folder = None
    if args.mask_dir:
        exclude = protocol_mask_names(args.mask_exclude_eval) if args.mask_exclude_eval else ()
        folder = MaskFolder(args.mask_dir, exclude=exclude)
    elif weights.get("folder"):
        logger.warning("no --mask_dir: the 'folder' share of --mask_ratios is dropped")
        weights.pop("folder")
    objects = ObjectShapes(args.segmentation_dir) if args.segmentation_dir else None
    if objects is None and weights.get("objects"):
        raise SystemExit("error: the 'objects' share of --mask_ratios needs --segmentation_dir")
    return MaskSampler(weights, folder=folder, objects=objects)


@dataclass
class TrainState:
    """Loop counters saved with every checkpoint (Accelerate saves model, optimizers, schedulers and RNGs)."""

    global_step: int = 0
    position: StreamPosition | None = None

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "position": self.position.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.global_step = int(state["global_step"])
        self.position.load_state_dict(state["position"])


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """Complete `checkpoint-N` folders, oldest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator: Accelerator, generator, output_dir: Path, step: int, total_limit: int | None) -> None:
    """`save_state` into a temporary folder renamed when complete, so a kill never leaves a half checkpoint.

    Every process writes its part (`save_state`); the main process adds the generator as a `save_pretrained`
    folder in `checkpoint-N/generator`, so any checkpoint can be evaluated or used with
    `MEDModel.from_pretrained` as it is, and gives the files the umask's modes before the rename.
    """
    final = output_dir / f"checkpoint-{step}"
    staging = output_dir / f".checkpoint-{step}.incomplete"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        if total_limit is not None:
            existing = checkpoint_folders(output_dir)
            for old in existing[: max(0, len(existing) - total_limit + 1)]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(generator).save_pretrained(staging / "generator")
        # Some writers (safetensors through transformers and Accelerate) leave owner-only files behind.
        apply_umask_modes(staging)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    accelerator.wait_for_everyone()


def resolve_resume(args: argparse.Namespace, output_dir: Path) -> Path | None:
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint != "latest":
        path = Path(args.resume_from_checkpoint)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {path} does not exist")
        return path
    folders = checkpoint_folders(output_dir)
    if not folders:
        logger.warning("--resume_from_checkpoint latest: no checkpoint in %s, starting a new run", output_dir)
        return None
    return folders[-1]


@dataclass(frozen=True)
class ValidationImages:
    """The fixed validation set as the pipeline and the metrics take it: what evaluation gets, not tensors."""

    targets: np.ndarray  # uint8 (N, H, W, 3)
    holes: np.ndarray  # bool (N, H, W)


def validation_set(args, transform: SampleTransform, dataset) -> ValidationImages:
    """A fixed batch (photos, masks) drawn once, so every validation shows the same inputs."""
    if args.validation_data_dir:
        dataset = load_streaming_dataset(None, args.validation_data_dir)
    batches = TrainingBatches(dataset, transform, args.num_validation_images, args.image_column, seed=args.seed + 1)
    batch = next(iter(batches))
    # The training tensors are uint8 / 127.5 - 1 (med_hf.training.data), so this gives back the photos' pixels.
    targets = ((batch["pixel_values"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return ValidationImages(targets=targets.numpy(), holes=batch["mask"][:, 0].numpy() > 0.5)


def run_validation(generator, images: ValidationImages, accelerator: Accelerator, step: int) -> dict[str, float]:
    """Inpaint the validation images with `MEDInpaintPipeline` around the generator, as evaluation does.

    The generator is in eval mode meanwhile. Known pixels are kept (`keep_known`) and the composites scored with
    the evaluation's `psnr` and `l1_percent` (means over the images); a grid per image goes to the trackers: the
    input with its hole painted white, the result, the target.
    """
    try:
        inpainter = PipelineInpainter(accelerator.unwrap_model(generator), batch_size=len(images.targets))
        results = inpainter.batch(masked_input(images.targets, images.holes), images.holes)
    finally:
        generator.train()
    composites = keep_known(images.targets, results, images.holes)
    log_validation_images(accelerator, images, composites, step)
    pairs = list(zip(composites, images.targets, strict=True))
    return {
        "validation/psnr_composite": float(np.mean([psnr(result, target) for result, target in pairs])),
        "validation/l1_percent_composite": float(np.mean([l1_percent(result, target) for result, target in pairs])),
    }


def log_validation_images(accelerator: Accelerator, images: ValidationImages, composites: np.ndarray, step: int):
    shown = np.where(images.holes[..., None], np.uint8(255), images.targets)  # hole painted white
    grid = np.concatenate([shown, composites, images.targets], axis=2)  # per row: input, result, target
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            pictures = torch.from_numpy(grid).permute(0, 3, 1, 2).float() / 255
            tracker.writer.add_images("validation/input_result_target", pictures, step)
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"validation": [wandb.Image(picture) for picture in grid]}, step=step)


@dataclass
class Training:
    """What one network's update needs: its trainable parameters, optimizer and LR scheduler."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: object


def apply_gradients(accelerator: Accelerator, loss: torch.Tensor, training: Training, max_grad_norm: float) -> None:
    """Backward, optional clipping, optimizer and scheduler step (Accelerate skips them while accumulating)."""
    accelerator.backward(loss)
    if max_grad_norm and accelerator.sync_gradients:
        accelerator.clip_grad_norm_(training.params, max_grad_norm)
    training.optimizer.step()
    training.scheduler.step()
    training.optimizer.zero_grad(set_to_none=True)


def local_crop(seed: int, step: int, resolution: int):
    """The local discriminator's 64x64 crop of this step; drawn per step, not tied to the hole (released quirk Q11,
    docs/released_quirks.md)."""
    rng = np.random.default_rng([seed, step, 7])
    top, left = (int(v) for v in rng.integers(0, resolution - LOCAL_CROP + 1, size=2))

    def crop(images: torch.Tensor) -> torch.Tensor:
        return images[..., top : top + LOCAL_CROP, left : left + LOCAL_CROP]

    return crop


def discriminator_step(accelerator, args, discriminators, training: Training, image, fake, crop) -> torch.Tensor:
    """Update the global and local discriminators on the detached fake; they are frozen again afterwards."""
    d_global, d_local = discriminators
    for d in discriminators:
        d.requires_grad_(True)
    with accelerator.autocast():
        d_loss = relativistic_discriminator_loss(d_global(image), d_global(fake.detach()))
        d_loss = d_loss + relativistic_discriminator_loss(d_local(crop(image)), d_local(crop(fake.detach())))
    apply_gradients(accelerator, d_loss, training, args.max_grad_norm)
    for d in discriminators:
        d.requires_grad_(False)
    return d_loss


def generator_losses(args, output, image, mask, discriminators, crop, perceptual) -> dict[str, torch.Tensor]:
    """The weighted terms of the generator objective: the released recipe (its quirks are released quirks Q8-Q11,
    docs/released_quirks.md), plus the optional SSIM term."""
    fake = output.reconstruction
    weights = hole_area_weights(mask) if args.weight_by_hole_area else None
    l1 = reconstruction_loss(fake, image, mask, args.hole_weight, args.valid_weight, sample_weights=weights)
    terms = {"l1": args.l1_weight * l1}
    if output.loss is not None and args.aux_weight:
        terms["aux"] = args.aux_weight * output.loss
    if discriminators:
        d_global, d_local = discriminators
        terms["gan"] = args.gan_weight * (
            relativistic_generator_loss(d_global(image), d_global(fake))
            + relativistic_generator_loss(d_local(crop(image)), d_local(crop(fake)))
        )
    if perceptual is not None:
        perceptual_loss, style_loss = perceptual(fake, image)
        terms["perceptual"] = args.perceptual_weight * perceptual_loss
        terms["style"] = args.style_weight * style_loss
    if args.ssim_weight:
        terms["ssim"] = args.ssim_weight * (
            1 - differentiable_ssim(fake * mask + image * (1 - mask), image, sample_weights=weights)
        )
    return terms


@dataclass
class Networks:
    """The generator, the discriminators (none without the GAN loss) and the perceptual loss (None without VGG16
    weights), with the updates of G and D; after `prepare_networks`, as Accelerate wraps them."""

    generator: torch.nn.Module
    discriminators: list[torch.nn.Module]
    perceptual: PerceptualStyleLoss | None
    g_training: Training
    d_training: Training | None


@dataclass
class TrainingData:
    """The sample transform, the whole streamed dataset (validation draws from it) and this process's shard."""

    transform: SampleTransform
    dataset: object
    shard: object


# --- the steps of a run, in order ------------------------------------------------------------------------


def build_accelerator(args: argparse.Namespace, output_dir: Path) -> Accelerator:
    report_to = None if args.report_to == "none" else args.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)
        ),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    return accelerator


def build_generator(args: argparse.Namespace) -> MEDModel:
    overrides = {
        name: value
        for name, value in (("refinement_channels", args.refinement_channels), ("hole_prior", args.hole_prior))
        if value is not None
    }
    if args.init_from:
        generator = MEDModel.from_pretrained(args.init_from, **overrides)
    else:
        generator = MEDModel(build_config(args.model_config, **overrides))
    return generator.train()


def build_perceptual_loss(args: argparse.Namespace, device: torch.device) -> PerceptualStyleLoss | None:
    if args.perceptual_weight <= 0 and args.style_weight <= 0:
        return None
    if not args.vgg16_weights:
        logger.warning(
            "*** PERCEPTUAL AND STYLE LOSSES ARE OFF: no --vgg16_weights given. They need ImageNet VGG16 "
            "weights, which this script never downloads on its own; pass a local file (e.g. torchvision's "
            "vgg16-397923af.pth) or a Hub id. ***"
        )
        return None
    return PerceptualStyleLoss(VGG16Features.from_pretrained(args.vgg16_weights)).to(device)


def build_training(args: argparse.Namespace, params: list[torch.nn.Parameter], learning_rate: float) -> Training:
    optimizer = torch.optim.AdamW(
        params, lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay
    )
    scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps
    )
    return Training(params, optimizer, scheduler)


def prepare_networks(accelerator: Accelerator, args: argparse.Namespace) -> Networks:
    """Build G, D and the perceptual loss (in this order: the seeded initial weights depend on it), their
    optimizers and schedulers, and hand them to Accelerate."""
    generator = build_generator(args)
    discriminators = [MEDDiscriminator(), MEDDiscriminator()] if args.gan_weight > 0 else []
    perceptual = build_perceptual_loss(args, accelerator.device)

    # Two optimizers (G, D) under one `prepare`; the frozen partial-conv mask kernels are not optimised.
    g_training = build_training(args, [p for p in generator.parameters() if p.requires_grad], args.learning_rate)
    d_training = None
    if discriminators:
        d_params = [p for d in discriminators for p in d.parameters()]
        d_training = build_training(args, d_params, args.discr_learning_rate or args.learning_rate)
    d_objects = [*discriminators, d_training.optimizer, d_training.scheduler] if d_training else []
    generator, g_training.optimizer, g_training.scheduler, *d_objects = accelerator.prepare(
        generator, g_training.optimizer, g_training.scheduler, *d_objects
    )
    if d_training:
        *discriminators, d_training.optimizer, d_training.scheduler = d_objects
    return Networks(generator, discriminators, perceptual, g_training, d_training)


def build_data(args: argparse.Namespace, accelerator: Accelerator) -> TrainingData:
    transform = SampleTransform(
        resolution=args.resolution,
        mask_sampler=build_mask_sampler(args),
        scale_range=tuple(args.random_scale),
        random_flip=not args.no_random_flip,
        structure_cache=None
        if args.no_structure
        else StructureCache(args.structure_cache_dir, border=args.structure_border),
    )
    dataset = load_streaming_dataset(
        args.dataset_name, args.train_data_dir, args.dataset_config_name, cache_dir=args.cache_dir
    )
    shard = shard_for_process(
        dataset, accelerator.process_index, accelerator.num_processes, args.seed, args.shuffle_buffer_size
    )
    return TrainingData(transform, dataset, shard)


def start_tracking(accelerator: Accelerator, args: argparse.Namespace, output_dir: Path) -> None:
    """Open the trackers and write `training_args.json` (main process; neither ever holds the Hub token)."""
    arguments = {name: value for name, value in vars(args).items() if not is_secret(name)}
    tracker_config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in arguments.items()}
    accelerator.init_trackers("med-train", config=tracker_config)
    write_training_arguments(output_dir, arguments, num_processes=accelerator.num_processes)


def training_step(
    accelerator: Accelerator,
    args: argparse.Namespace,
    networks: Networks,
    batches,
    step: int,
    fingerprints: list[float],
) -> tuple[dict[str, float], int]:
    """One optimisation step: `--gradient_accumulation_steps` batches, each through D's update (GAN on) and G's.

    Returns the losses summed over the batches, and the number of images all processes used.
    """
    generator, discriminators = networks.generator, networks.discriminators
    step_logs: dict[str, float] = {}
    images_seen = 0
    for _ in range(args.gradient_accumulation_steps):
        batch = next(batches)
        if len(fingerprints) < 16:
            fingerprints += [round(v, 6) for v in batch["pixel_values"].mean(dim=(1, 2, 3)).tolist()]
        image = batch["pixel_values"].to(accelerator.device)
        mask = batch["mask"].to(accelerator.device)
        structure = batch.get("structure")
        structure = structure.to(accelerator.device) if structure is not None else None
        with accelerator.accumulate(generator, *discriminators):
            with accelerator.autocast():
                output = generator(pixel_values=image, mask=mask, labels=image, structure_labels=structure)
            fake = output.reconstruction
            crop = local_crop(args.seed, step, args.resolution)
            if discriminators:
                d_loss = discriminator_step(accelerator, args, discriminators, networks.d_training, image, fake, crop)
                step_logs["loss/discriminator"] = d_loss.item()
            with accelerator.autocast():
                terms = generator_losses(args, output, image, mask, discriminators, crop, networks.perceptual)
                g_loss = sum(terms.values())
            apply_gradients(accelerator, g_loss, networks.g_training, args.max_grad_norm)
        images_seen += image.shape[0] * accelerator.num_processes
        for name, value in terms.items():
            step_logs[f"loss/{name}"] = step_logs.get(f"loss/{name}", 0.0) + value.item()
        step_logs["loss/generator"] = step_logs.get("loss/generator", 0.0) + g_loss.item()
    return step_logs, images_seen


class TrainingLog:
    """The progress bar, and every `--logging_steps` the losses averaged over the steps since the last log, the
    learning rate and the images per second."""

    def __init__(self, accelerator: Accelerator, args: argparse.Namespace, first_step: int):
        self.accelerator = accelerator
        self.args = args
        self.progress = tqdm(
            total=args.max_train_steps, initial=first_step, desc="steps", disable=not accelerator.is_main_process
        )
        self._restart()

    def _restart(self) -> None:
        self.sums: dict[str, float] = {}
        self.started, self.images_seen, self.window = time.perf_counter(), 0, 0

    def step_done(self, step: int, step_logs: dict[str, float], images_seen: int, learning_rate: float) -> None:
        self.images_seen += images_seen
        self.window += 1
        self.progress.update(1)
        for name, value in step_logs.items():
            self.sums[name] = self.sums.get(name, 0.0) + value / self.args.gradient_accumulation_steps
        if step % self.args.logging_steps == 0 or step == self.args.max_train_steps:
            elapsed = time.perf_counter() - self.started
            logs = {name: value / self.window for name, value in self.sums.items()}
            logs["lr"] = learning_rate
            logs["images_per_second"] = self.images_seen / elapsed
            self.accelerator.log(logs, step=step)
            self.progress.set_postfix(loss=f"{logs['loss/generator']:.4f}", ips=f"{logs['images_per_second']:.2f}")
            self._restart()

    def close(self) -> None:
        self.progress.close()


def after_step(
    accelerator: Accelerator,
    args: argparse.Namespace,
    networks: Networks,
    step: int,
    validation: ValidationImages | None,
    output_dir: Path,
) -> None:
    """The hooks of a finished step: a checkpoint every `--checkpointing_steps`, a validation every
    `--validation_steps` and at the last step."""
    if step % args.checkpointing_steps == 0:
        save_checkpoint(accelerator, networks.generator, output_dir, step, args.checkpoints_total_limit)
    if accelerator.is_main_process and (step % args.validation_steps == 0 or step == args.max_train_steps):
        accelerator.log(run_validation(networks.generator, validation, accelerator, step), step=step)


def train(
    accelerator: Accelerator,
    args: argparse.Namespace,
    networks: Networks,
    batches,
    state: TrainState,
    validation: ValidationImages | None,
    output_dir: Path,
) -> list[float]:
    """The training loop, from `state.global_step` to `--max_train_steps`; returns this rank's sample fingerprints
    (the mean pixel value of the first samples it read)."""
    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    accelerator.print(
        f"training {sum(p.numel() for p in networks.g_training.params):,} generator parameters, batch {total_batch} "
        f"({args.train_batch_size} x {accelerator.num_processes} processes x {args.gradient_accumulation_steps} "
        f"accumulation), steps {state.global_step} -> {args.max_train_steps}"
    )
    log = TrainingLog(accelerator, args, state.global_step)
    fingerprints: list[float] = []
    while state.global_step < args.max_train_steps:
        step_logs, images_seen = training_step(accelerator, args, networks, batches, state.global_step, fingerprints)
        state.global_step += 1
        log.step_done(state.global_step, step_logs, images_seen, networks.g_training.scheduler.get_last_lr()[0])
        after_step(accelerator, args, networks, state.global_step, validation, output_dir)
    log.close()
    return fingerprints


def write_rank_summary(output_dir: Path, accelerator: Accelerator, generator, fingerprints: list[float]) -> None:
    """Per-process sanity record: a digest of this rank's generator weights and of the first samples it read.

    After a distributed run all ranks must hold identical weights, and each must have read its own data.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(accelerator.unwrap_model(generator).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    folder = output_dir / "rank_summaries"
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"rank": accelerator.process_index, "weights_sha256": digest.hexdigest(), "first_samples": fingerprints}
    write_text(folder / f"rank-{accelerator.process_index}.json", json.dumps(summary, indent=2))


def save_final_model(model: MEDModel, output_dir: Path) -> None:
    """`save_pretrained` into a staging folder, given the umask's modes, and moved into `output_dir` file by file,
    the weights last: `output_dir/model.safetensors` appears complete, and only once the model is."""
    staging = output_dir / ".final-model.incomplete"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    apply_umask_modes(staging)
    for path in sorted(staging.iterdir(), key=lambda p: (p.suffix == ".safetensors", p.name)):
        os.replace(path, output_dir / path.name)
    staging.rmdir()


def push_to_hub(args: argparse.Namespace, output_dir: Path) -> None:
    """Publish `output_dir` as `--hub_model_id` through med-publish's code: remote code, checked weights, card."""
    try:
        lines = publish(output_dir, args.hub_model_id, private=args.hub_private_repo, token=args.hub_token)
    except Exception:
        logger.error(
            "the push to the Hub failed; the model is saved in %s, publish it with: med-publish --model %s "
            "--repo-id %s",
            output_dir,
            output_dir,
            args.hub_model_id,
        )
        raise
    for line in lines:
        logger.info(line)


def finish(
    accelerator: Accelerator, args: argparse.Namespace, generator, fingerprints: list[float], output_dir: Path
) -> None:
    """Rank summaries, the final model with its card (the run's training record), and the push to the Hub."""
    accelerator.wait_for_everyone()
    write_rank_summary(output_dir, accelerator, generator, fingerprints)
    if accelerator.is_main_process:
        save_final_model(accelerator.unwrap_model(generator), output_dir)
    # Closes the trackers: the TensorBoard log is complete when the training record reads its hours.
    accelerator.end_training()
    if accelerator.is_main_process:
        write_model_card(output_dir, repo_id=args.hub_model_id or "path/to/model", training=training_record(output_dir))
        if args.push_to_hub:
            push_to_hub(args, output_dir)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = build_accelerator(args, output_dir)
    # The same seed everywhere: every rank builds identical initial weights.
    set_seed(args.seed)
    networks = prepare_networks(accelerator, args)
    data = build_data(args, accelerator)

    state = TrainState(position=StreamPosition())
    accelerator.register_for_checkpointing(state)
    resume = resolve_resume(args, output_dir)
    if resume is not None:
        accelerator.print(f"resuming from {resume}")
        accelerator.load_state(str(resume))
    batches = iter(
        TrainingBatches(
            data.shard,
            data.transform,
            args.train_batch_size,
            args.image_column,
            args.seed,
            accelerator.process_index,
            state.position,
        )
    )
    validation = validation_set(args, data.transform, data.dataset) if accelerator.is_main_process else None
    if accelerator.is_main_process:
        start_tracking(accelerator, args, output_dir)

    fingerprints = train(accelerator, args, networks, batches, state, validation, output_dir)
    finish(accelerator, args, networks.generator, fingerprints, output_dir)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
