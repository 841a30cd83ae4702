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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
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
from med_hf.configuration_med import HOLE_PRIORS
from med_hf.evaluation import protocol_mask_names
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
    hole_area_weights,
    reconstruction_loss,
    relativistic_discriminator_loss,
    relativistic_generator_loss,
    ssim,
)
from med_hf.training.masks import MaskFolder, MaskSampler
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
                      help="mix of mask sources: free_form, box, centre_box, folder")  # fmt: skip
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
                       help="harmonic: the refinement head blends in a harmonic fill of the hole")  # fmt: skip

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
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id")
    run.add_argument("--hub_token")
    run.add_argument("--hub_private_repo", action="store_true")
    args = parser.parse_args(argv)

    if not args.dataset_name and not args.train_data_dir:
        parser.error("give --dataset_name or --train_data_dir")
    if args.resolution % 64 or args.resolution < LOCAL_CROP:
        parser.error(f"--resolution must be a multiple of 64, got {args.resolution}")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
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
    return MaskSampler(weights, folder=folder)


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

    The generator is also written with `save_pretrained` into `checkpoint-N/generator`, so any checkpoint can
    be evaluated or used with `MEDModel.from_pretrained` as it is.
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


def validation_set(args, transform: SampleTransform, dataset) -> dict[str, torch.Tensor]:
    """A fixed batch (photos, masks) drawn once, so every validation shows the same inputs."""
    if args.validation_data_dir:
        dataset = load_streaming_dataset(None, args.validation_data_dir)
    batches = TrainingBatches(dataset, transform, args.num_validation_images, args.image_column, seed=args.seed + 1)
    return next(iter(batches))


@torch.no_grad()
def run_validation(model, batch: dict[str, torch.Tensor], accelerator: Accelerator, step: int) -> dict[str, float]:
    model.eval()
    device = accelerator.device
    image, mask = batch["pixel_values"].to(device), batch["mask"].to(device)
    output = accelerator.unwrap_model(model)(pixel_values=image, mask=mask).reconstruction
    composite = output * mask + image * (1 - mask)
    model.train()
    mse = ((composite - image) / 2).pow(2).mean(dim=(1, 2, 3))
    psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()
    shown = image * (1 - mask) + mask  # hole painted white
    grid = torch.cat([shown, composite, image], dim=3)  # per row: input, result, target
    grid = ((grid + 1) / 2).clamp(0, 1).cpu()
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("validation/input_result_target", grid, step)
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"validation": [wandb.Image(g.permute(1, 2, 0).numpy()) for g in grid]}, step=step)
    return {"validation/psnr_composite": psnr, "validation/l1_composite": (composite - image).abs().mean().item()}


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
        terms["ssim"] = args.ssim_weight * (1 - ssim(fake * mask + image * (1 - mask), image, sample_weights=weights))
    return terms


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
    (folder / f"rank-{accelerator.process_index}.json").write_text(json.dumps(summary, indent=2))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
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
    # The same seed everywhere: every rank builds identical initial weights.
    set_seed(args.seed)

    overrides = {
        name: value
        for name, value in (("refinement_channels", args.refinement_channels), ("hole_prior", args.hole_prior))
        if value is not None
    }
    if args.init_from:
        generator = MEDModel.from_pretrained(args.init_from, **overrides)
    else:
        generator = MEDModel(build_config(args.model_config, **overrides))
    generator.train()

    discriminators = [MEDDiscriminator(), MEDDiscriminator()] if args.gan_weight > 0 else []
    perceptual = None
    if args.perceptual_weight > 0 or args.style_weight > 0:
        if args.vgg16_weights:
            perceptual = PerceptualStyleLoss(VGG16Features.from_pretrained(args.vgg16_weights))
            perceptual.to(accelerator.device)
        else:
            logger.warning(
                "*** PERCEPTUAL AND STYLE LOSSES ARE OFF: no --vgg16_weights given. They need ImageNet VGG16 "
                "weights, which this script never downloads on its own; pass a local file (e.g. torchvision's "
                "vgg16-397923af.pth) or a Hub id. ***"
            )

    def training_for(params: list[torch.nn.Parameter], learning_rate: float) -> Training:
        optimizer = torch.optim.AdamW(
            params, lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay
        )
        scheduler = get_scheduler(
            args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps
        )
        return Training(params, optimizer, scheduler)

    # Two optimizers (G, D) under one `prepare`; the frozen partial-conv mask kernels are not optimised.
    g_training = training_for([p for p in generator.parameters() if p.requires_grad], args.learning_rate)
    d_training = None
    if discriminators:
        d_params = [p for d in discriminators for p in d.parameters()]
        d_training = training_for(d_params, args.discr_learning_rate or args.learning_rate)
    d_objects = [*discriminators, d_training.optimizer, d_training.scheduler] if d_training else []
    generator, g_training.optimizer, g_training.scheduler, *d_objects = accelerator.prepare(
        generator, g_training.optimizer, g_training.scheduler, *d_objects
    )
    if d_training:
        *discriminators, d_training.optimizer, d_training.scheduler = d_objects

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
    state = TrainState(position=StreamPosition())
    accelerator.register_for_checkpointing(state)

    resume = resolve_resume(args, output_dir)
    if resume is not None:
        accelerator.print(f"resuming from {resume}")
        accelerator.load_state(str(resume))
    batches = iter(
        TrainingBatches(
            shard,
            transform,
            args.train_batch_size,
            args.image_column,
            args.seed,
            accelerator.process_index,
            state.position,
        )
    )
    validation = validation_set(args, transform, dataset) if accelerator.is_main_process else None

    if accelerator.is_main_process:
        tracker_config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in vars(args).items()}
        accelerator.init_trackers("med-train", config=tracker_config)
        (output_dir / "training_args.json").write_text(json.dumps(vars(args), indent=2, default=str))

    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    accelerator.print(
        f"training {sum(p.numel() for p in g_training.params):,} generator parameters, batch {total_batch} "
        f"({args.train_batch_size} x {accelerator.num_processes} processes x {args.gradient_accumulation_steps} "
        f"accumulation), steps {state.global_step} -> {args.max_train_steps}"
    )
    progress = tqdm(
        total=args.max_train_steps, initial=state.global_step, desc="steps", disable=not accelerator.is_main_process
    )
    started, images_seen, window = time.perf_counter(), 0, 0
    fingerprints: list[float] = []  # mean pixel value of the first samples this rank reads
    logs: dict[str, float] = {}
    while state.global_step < args.max_train_steps:
        step_logs: dict[str, float] = {}
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
                crop = local_crop(args.seed, state.global_step, args.resolution)
                if discriminators:
                    d_loss = discriminator_step(accelerator, args, discriminators, d_training, image, fake, crop)
                    step_logs["loss/discriminator"] = d_loss.item()
                with accelerator.autocast():
                    terms = generator_losses(args, output, image, mask, discriminators, crop, perceptual)
                    g_loss = sum(terms.values())
                apply_gradients(accelerator, g_loss, g_training, args.max_grad_norm)
            images_seen += image.shape[0] * accelerator.num_processes
            for name, value in terms.items():
                step_logs[f"loss/{name}"] = step_logs.get(f"loss/{name}", 0.0) + value.item()
            step_logs["loss/generator"] = step_logs.get("loss/generator", 0.0) + g_loss.item()

        state.global_step += 1
        window += 1
        progress.update(1)
        for name, value in step_logs.items():
            logs[name] = logs.get(name, 0.0) + value / args.gradient_accumulation_steps
        if state.global_step % args.logging_steps == 0 or state.global_step == args.max_train_steps:
            elapsed = time.perf_counter() - started
            logs = {name: value / window for name, value in logs.items()}
            logs["lr"] = g_training.scheduler.get_last_lr()[0]
            logs["images_per_second"] = images_seen / elapsed
            accelerator.log(logs, step=state.global_step)
            progress.set_postfix(loss=f"{logs['loss/generator']:.4f}", ips=f"{logs['images_per_second']:.2f}")
            logs, started, images_seen, window = {}, time.perf_counter(), 0, 0
        if state.global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, generator, output_dir, state.global_step, args.checkpoints_total_limit)
        if accelerator.is_main_process and (
            state.global_step % args.validation_steps == 0 or state.global_step == args.max_train_steps
        ):
            accelerator.log(
                run_validation(generator, validation, accelerator, state.global_step), step=state.global_step
            )
    progress.close()

    accelerator.wait_for_everyone()
    write_rank_summary(output_dir, accelerator, generator, fingerprints)
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(generator)
        final.save_pretrained(output_dir)
        write_model_card(
            output_dir,
            training={
                "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                "steps": state.global_step,
                "batch_size": total_batch,
                "resolution": args.resolution,
                "data": args.dataset_name or Path(args.train_data_dir).name,
            },
        )
        if args.push_to_hub:
            from huggingface_hub import HfApi

            api = HfApi(token=args.hub_token)
            api.create_repo(args.hub_model_id, private=args.hub_private_repo, exist_ok=True)
            api.upload_folder(
                repo_id=args.hub_model_id,
                folder_path=output_dir,
                ignore_patterns=["checkpoint-*", ".checkpoint-*", "logs/*"],
                commit_message=f"MEDFE after {state.global_step} steps",
            )
    accelerator.end_training()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
