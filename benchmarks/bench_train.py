"""Training speed (images/s) of MEDFE presets on this machine, one process, the released loss recipe.

    python benchmarks/bench_train.py [--presets tiny small released] [--steps 5] [--threads 2]

Each step is what `training/train.py` does per batch: generator forward, discriminator (global + local) update,
generator update with L1 + auxiliary + relativistic GAN losses (perceptual/style need VGG16 weights and are
left out, as they are when none are given). Data loading is not timed. Resolution 128 for `tiny`, 256 otherwise;
batch 1 for the full released config (its recipe batch size), 4 otherwise. The reference workload of
`bench_forward.py` (15 convolutions 256->256 at 32x32) is timed in the same run.
"""

from __future__ import annotations

import argparse

import torch
from common import median_time, reference_workload

from med_hf import MEDConfig, MEDModel
from med_hf.training.discriminator import MEDDiscriminator
from med_hf.training.losses import reconstruction_loss, relativistic_discriminator_loss, relativistic_generator_loss


def training_step_fn(preset: str, batch: int, resolution: int):
    torch.manual_seed(0)
    generator = MEDModel(MEDConfig.from_preset(preset)).train()
    d_global, d_local = MEDDiscriminator(), MEDDiscriminator()
    g_opt = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], 2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam([*d_global.parameters(), *d_local.parameters()], 2e-4, betas=(0.5, 0.999))
    image = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    mask = torch.zeros(batch, 1, resolution, resolution)
    mask[..., resolution // 4 : resolution // 2, resolution // 3 : 2 * resolution // 3] = 1

    def crop(x: torch.Tensor) -> torch.Tensor:
        return x[..., 32:96, 32:96]

    def step() -> None:
        output = generator(pixel_values=image, mask=mask, labels=image, structure_labels=image)
        fake = output.reconstruction
        d_loss = relativistic_discriminator_loss(d_global(image), d_global(fake.detach()))
        d_loss = d_loss + relativistic_discriminator_loss(d_local(crop(image)), d_local(crop(fake.detach())))
        d_loss.backward()
        d_opt.step()
        d_opt.zero_grad()
        for d in (d_global, d_local):
            d.requires_grad_(False)
        g_loss = reconstruction_loss(fake, image, mask, 1.0, 1.0) + 3 * output.loss
        g_loss = g_loss + 0.2 * (
            relativistic_generator_loss(d_global(image), d_global(fake))
            + relativistic_generator_loss(d_local(crop(image)), d_local(crop(fake)))
        )
        g_loss.backward()
        g_opt.step()
        g_opt.zero_grad()
        for d in (d_global, d_local):
            d.requires_grad_(True)

    return step, sum(p.numel() for p in generator.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "released"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    reference, _ = median_time(reference_workload(), 5)
    print(f"torch {torch.__version__}, {args.threads} threads; reference workload {reference * 1000:.0f} ms")
    for preset in args.presets:
        resolution = 128 if preset == "tiny" else 256
        batch = 1 if preset == "released" else 4
        step, parameters = training_step_fn(preset, batch, resolution)
        seconds, times = median_time(step, args.steps, warmup=1)
        print(
            f"{preset:9s} {parameters / 1e6:7.2f} M params  {resolution}px batch {batch}: "
            f"{batch / seconds:6.2f} images/s ({seconds:.2f} s/step = {seconds / reference:.1f} x reference; "
            f"range {min(times):.2f}-{max(times):.2f} s)"
        )


if __name__ == "__main__":
    main()
