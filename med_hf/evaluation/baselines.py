"""The methods the evaluation compares: classical baselines (OpenCV Telea and Navier-Stokes, the harmonic fill)
and models run through `MEDInpaintPipeline`, the code users call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .protocol import InpaintFn

INPAINT_RADIUS = 3


def telea(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """OpenCV fast-marching inpainting (Telea 2004), radius 3."""
    import cv2

    return cv2.inpaint(image, hole.astype(np.uint8) * 255, INPAINT_RADIUS, cv2.INPAINT_TELEA)


def navier_stokes(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """OpenCV Navier-Stokes inpainting (Bertalmio et al. 2001), radius 3."""
    import cv2

    return cv2.inpaint(image, hole.astype(np.uint8) * 255, INPAINT_RADIUS, cv2.INPAINT_NS)


def harmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Harmonic (membrane) interpolation: the discrete Laplace equation solved in the hole (`harmonic_fill`).

    Not in the protocol's reference table. The default model's refinement head blends in an approximation of it
    (`push_pull_fill`, `hole_prior="harmonic"`); evaluating it shows what the network adds to a smooth fill.
    """
    from ..harmonic import harmonic_fill

    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    filled = harmonic_fill(pixels, torch.from_numpy(hole)[None, None].float())
    return filled[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def patchmatch(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Plain, unguided PatchMatch (the content-aware-fill approach): the pipeline's texture stage with no network
    guide, started from a smooth fill, 7x7 patches, seed 0.

    Not in the protocol's reference table; it is the texture to match without losing the network's fidelity.
    """
    from ..patchmatch import exemplar_fill

    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    filled = exemplar_fill(pixels, torch.from_numpy(hole)[None, None], generator=torch.Generator().manual_seed(0))
    return (filled[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


# Patch radius of the `pypatchmatch` baseline: 7x7 patches, as in the texture issue's calibration.
PYPATCHMATCH_RADIUS = 3


def pypatchmatch(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The `pypatchmatch` package (compiled PatchMatch inpainting, weighted-mean voting), 7x7 patches, seed 0: the
    content-aware fill that the texture issue calibrates its bars with, measured on the same protocol.

    Not in the protocol's reference table; needs `pip install pypatchmatch` (part of the `train` extra).
    """
    try:
        from patchmatch import patch_match
    except ImportError as error:
        raise ImportError("the pypatchmatch baseline needs its package: pip install pypatchmatch") from error
    patch_match.set_random_seed(0)
    return patch_match.inpaint(image, hole.astype(np.uint8) * 255, patch_size=PYPATCHMATCH_RADIUS)


CLASSICAL_BASELINES: dict[str, InpaintFn] = {
    "telea": telea,
    "ns": navier_stokes,
    "harmonic": harmonic,
    "patchmatch": patchmatch,
    "pypatchmatch": pypatchmatch,
}


def is_classical(fn: InpaintFn) -> bool:
    """Whether ``fn`` is one of the classical baselines that learned methods have to beat."""
    return any(fn is baseline for baseline in CLASSICAL_BASELINES.values())


class PipelineInpainter:
    """:class:`BatchedInpaintFn` running a model through `MEDInpaintPipeline`, the code users call, so that the
    published numbers measure exactly what users get.

    Args:
        model: a `MEDInpaintPipeline`, a `MEDModel`, or a local folder / Hub repo id to load one from.
        batch_size: images per forward pass.
        device: where to load `model` when it is given as a path (default: CUDA if available).
        seed: seeds the random choices of the pipeline (its texture stage): image `k` of the run gets a generator
            seeded with `seed + k`, so a run is reproducible.
        **call_options: further arguments of every pipeline call, e.g. `texture="none"`.
    """

    def __init__(
        self, model: Any, batch_size: int = 8, device: str | torch.device | None = None, seed: int = 0, **call_options
    ) -> None:
        # Imported here so that the protocol (and the classical baselines) work without the model code.
        from ..modeling_med import MEDModel
        from ..pipeline_med import MEDInpaintPipeline

        if isinstance(model, MEDInpaintPipeline):
            pipeline = model
        elif isinstance(model, MEDModel):
            pipeline = MEDInpaintPipeline(model=model.eval())
        else:
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            pipeline = MEDInpaintPipeline.from_pretrained(model).to(device)
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.seed = seed
        self.call_options = call_options
        self._images_done = 0

    def __call__(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        return self.batch(image[None], hole[None])[0]

    def batch(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) and bool (N, H, W) -> uint8 (N, H, W, 3), the pipeline's results."""
        first = self._images_done
        self._images_done += len(images)
        generators = [torch.Generator().manual_seed(self.seed + first + k) for k in range(len(images))]
        output = self.pipeline(
            image=list(images),
            mask_image=list(holes),
            batch_size=self.batch_size,
            output_type="input",
            generator=generators,
            **self.call_options,
        )
        return np.stack(output.images)
