"""MEDFE model configuration."""

from __future__ import annotations

from transformers import PreTrainedConfig

FEATURE_MASK_MODES = ("released", "nearest")
PARTIAL_CONV_RENORM_MODES = ("released", "valid_ratio")
EQUALIZATION_LAYOUTS = ("released", "spatial")
# "harmonic" is the approximate membrane the default model was trained with (`harmonic.push_pull_fill`); it keeps
# that meaning so that saved models keep their outputs. "exact_harmonic" is the converged one (`harmonic_fill`).
HOLE_PRIORS = ("none", "harmonic", "exact_harmonic")
PARTIAL_CONV_IMPLEMENTATIONS = ("winograd", "direct")

# The released bugs fixed; what new models are trained with.
CORRECTED_VARIANTS = {
    "feature_mask": "nearest",
    "partial_conv_renorm": "valid_ratio",
    "equalization_layout": "spatial",
}

PRESETS: dict[str, dict] = {
    # The architecture of the original release, all quirks mirrored: converted checkpoints use this.
    "released": {},
    # Every layer of the real network at a width that trains in seconds on a CPU: for tests and smoke runs.
    "tiny": {
        "base_channels": 4,
        "num_residual_blocks": 1,
        "partial_conv_layers": 2,
        "image_size": 128,
        **CORRECTED_VARIANTS,
    },
    # The shipped default model: a quarter of the released width, trainable on a 2-core CPU in hours.
    "small": {
        "base_channels": 16,
        "num_residual_blocks": 2,
        "partial_conv_layers": 2,
        **CORRECTED_VARIANTS,
    },
}


class MEDConfig(PreTrainedConfig):
    r"""
    Configuration of [`MEDModel`], the generator of MEDFE ("Rethinking Image Inpainting via a Mutual
    Encoder-Decoder with Feature Equalizations", Liu et al., ECCV 2020).

    The defaults describe the network of the authors' released code exactly (130,316,070 parameters, of which
    27,197,440 are the frozen partial-convolution mask kernels), so that converted original checkpoints load
    and reproduce the original outputs. Three behaviours of the released code are bugs; each has a corrected
    variant selectable here (they change the computation, so a checkpoint must be used with the variant it
    was trained with):

    - `feature_mask`: how the pixel hole mask reaches the partial convolutions on the 1/8-resolution feature
      grid. `"released"` mirrors the released code, whose averaging-and-threshold step never marks a hole,
      so the partial convolutions always see a fully valid mask. `"nearest"` is the repository's first
      version: nearest-neighbour 8x downsampling, so holes do reach the partial convolutions.
    - `partial_conv_renorm`: the divisor of the partial convolutions. `"released"` divides by a convolution of
      the valid mask with a frozen *random* kernel (the constant-one kernel was overwritten by the weight
      initialisation); these kernels are stored in checkpoints and must be loaded. `"valid_ratio"` is the
      partial convolution of Liu et al. (2018): scale by (window size / number of valid taps), no stored
      kernel.
    - `equalization_layout`: the released feature equalisation reinterprets its (positions x channels) result
      as (channels x height x width) without a transpose, scrambling the grid. `"spatial"` keeps features
      spatially aligned.

    These are released quirks Q2, Q3 and Q4; docs/released_quirks.md describes every quirk of the released code
    (Q1-Q18), whether it is mirrored or fixed, and the option that selects it.

    `refinement_channels > 0` adds a component that is not in the paper: a full-resolution refinement head (see
    `MEDRefinementHead`). With a `hole_prior` the head also receives a smooth membrane fill of the hole and blends it
    with the decoder's image through a learned per-pixel gate. The released architecture has neither.

    `partial_conv_implementation` only chooses how the filling streams' convolutions are computed, not what they
    compute: `"winograd"` (default; the filling streams run about 2.3x faster on CPU, with float32 rounding a few
    times that of a direct convolution; kernels larger than 7x7 are computed directly) or `"direct"`
    (`torch.nn.functional.conv2d`).

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Number of image channels (RGB).
        base_channels (`int`, *optional*, defaults to 64):
            Width of the first encoder level (`ngf` of the original code). Every other width is a fixed
            multiple: encoder levels 1x, 2x, 4x, 8x, 8x, 8x; the MEDFE block works at 4x (texture/structure
            features) and 8x (fused features).
        num_residual_blocks (`int`, *optional*, defaults to 4):
            Residual blocks at the encoder bottleneck.
        residual_dilation (`int`, *optional*, defaults to 2):
            Dilation of the first convolution of each bottleneck residual block.
        partial_conv_kernel_sizes (`list[int]`, *optional*, defaults to `[3, 5, 7]`):
            Kernel sizes of the multi-scale filling streams.
        partial_conv_layers (`int`, *optional*, defaults to 5):
            Partial-convolution layers per stream.
        se_reduction (`int`, *optional*, defaults to 16):
            Channel reduction of the squeeze-and-excitation channel equalisation.
        gaussian_sigma (`float`, *optional*, defaults to 1.5):
            Standard deviation, in feature-grid cells, of the spatial (Gaussian) equalisation.
        hole_fill_value (`list[int]`, *optional*, defaults to `[123, 104, 117]`):
            8-bit RGB value written into hole pixels before encoding (the released code's constant).
        feature_mask (`str`, *optional*, defaults to `"released"`):
            `"released"` or `"nearest"`, see above.
        partial_conv_renorm (`str`, *optional*, defaults to `"released"`):
            `"released"` or `"valid_ratio"`, see above.
        equalization_layout (`str`, *optional*, defaults to `"released"`):
            `"released"` or `"spatial"`, see above.
        image_size (`int`, *optional*, defaults to 256):
            Working resolution the model was trained at. The network accepts any height and width that are
            multiples of 64; pipelines resize or crop to this size.
        leaky_relu_slope (`float`, *optional*, defaults to 0.2):
            Negative slope of every LeakyReLU.
        norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every instance normalisation.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of every convolution kernel.
        refinement_channels (`int`, *optional*, defaults to 0):
            Width of the full-resolution refinement head; 0 (the released architecture) leaves it out.
        hole_prior (`str`, *optional*, defaults to `"none"`):
            The smooth fill of the hole the refinement head blends with the decoder's image (needs
            `refinement_channels > 0`): `"harmonic"` the approximate membrane of `harmonic.push_pull_fill` (a
            pyramid and a few Jacobi sweeps; off by up to about 10 % of the boundary values' range), which the
            shipped default model and every model saved before `"exact_harmonic"` existed were trained with and
            keep; `"exact_harmonic"` the converged membrane of `harmonic.harmonic_fill` (the discrete Laplace
            equation solved to far below one 8-bit level), for new models; `"none"` leaves it out. A model reads
            the fill it was trained with: the two are not interchangeable.
        partial_conv_implementation (`str`, *optional*, defaults to `"winograd"`):
            `"winograd"` or `"direct"`, see above. Weights do not depend on it.

    Example:

    ```python
    >>> from med_hf import MEDConfig, MEDModel

    >>> config = MEDConfig()  # the released architecture
    >>> model = MEDModel(config)
    ```
    """

    model_type = "med"

    def __init__(
        self,
        num_channels: int = 3,
        base_channels: int = 64,
        num_residual_blocks: int = 4,
        residual_dilation: int = 2,
        partial_conv_kernel_sizes: list[int] | tuple[int, ...] = (3, 5, 7),
        partial_conv_layers: int = 5,
        se_reduction: int = 16,
        gaussian_sigma: float = 1.5,
        hole_fill_value: list[int] | tuple[int, ...] = (123, 104, 117),
        feature_mask: str = "released",
        partial_conv_renorm: str = "released",
        equalization_layout: str = "released",
        image_size: int = 256,
        leaky_relu_slope: float = 0.2,
        norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        refinement_channels: int = 0,
        hole_prior: str = "none",
        partial_conv_implementation: str = "winograd",
        **kwargs,
    ):
        _check_choice("feature_mask", feature_mask, FEATURE_MASK_MODES)
        _check_choice("partial_conv_renorm", partial_conv_renorm, PARTIAL_CONV_RENORM_MODES)
        _check_choice("equalization_layout", equalization_layout, EQUALIZATION_LAYOUTS)
        if base_channels < 1 or (8 * base_channels) % se_reduction:
            raise ValueError(
                f"base_channels={base_channels} must be positive and 8 * base_channels must be divisible by "
                f"se_reduction={se_reduction}"
            )
        if any(k % 2 == 0 for k in partial_conv_kernel_sizes):
            raise ValueError(f"partial_conv_kernel_sizes must be odd, got {list(partial_conv_kernel_sizes)}")
        if len(hole_fill_value) != num_channels:
            raise ValueError(f"hole_fill_value needs {num_channels} values, got {list(hole_fill_value)}")
        if image_size % 64:
            raise ValueError(f"image_size must be a multiple of 64, got {image_size}")
        if refinement_channels < 0:
            raise ValueError(f"refinement_channels must be >= 0, got {refinement_channels}")
        _check_choice("hole_prior", hole_prior, HOLE_PRIORS)
        if hole_prior != "none" and not refinement_channels:
            raise ValueError(f"hole_prior={hole_prior!r} is blended in by the refinement head: set refinement_channels")
        _check_choice("partial_conv_implementation", partial_conv_implementation, PARTIAL_CONV_IMPLEMENTATIONS)

        self.num_channels = num_channels
        self.base_channels = base_channels
        self.num_residual_blocks = num_residual_blocks
        self.residual_dilation = residual_dilation
        self.partial_conv_kernel_sizes = list(partial_conv_kernel_sizes)
        self.partial_conv_layers = partial_conv_layers
        self.se_reduction = se_reduction
        self.gaussian_sigma = gaussian_sigma
        self.hole_fill_value = list(hole_fill_value)
        self.feature_mask = feature_mask
        self.partial_conv_renorm = partial_conv_renorm
        self.equalization_layout = equalization_layout
        self.image_size = image_size
        self.leaky_relu_slope = leaky_relu_slope
        self.norm_eps = norm_eps
        self.initializer_range = initializer_range
        self.refinement_channels = refinement_channels
        self.hole_prior = hole_prior
        self.partial_conv_implementation = partial_conv_implementation
        super().__init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> MEDConfig:
        """A named configuration: one of `PRESETS` (e.g. "released", "tiny"), optionally with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def is_released_variant(self) -> bool:
        """Whether this is the released network with every quirk mirrored (needed for original checkpoints)."""
        quirks = (self.feature_mask, self.partial_conv_renorm, self.equalization_layout)
        return quirks == ("released",) * 3 and not self.refinement_channels


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


# Saved folders carry `auto_map` and the source files, so they load with trust_remote_code=True anywhere.
MEDConfig.register_for_auto_class()

__all__ = ["CORRECTED_VARIANTS", "HOLE_PRIORS", "PRESETS", "MEDConfig"]
