"""PyTorch MEDFE generator (Mutual Encoder-Decoder with Feature Equalizations, Liu et al., ECCV 2020).

The module mirrors the network of the authors' released code (see `MEDConfig` for the three released bugs that
are kept by default and their corrected variants, and docs/released_quirks.md for every released quirk) while
computing it differently where that is much cheaper:

- the partial convolutions never convolve a 256-channel mask: the valid mask is the same for every channel,
  so its renormalisation divisor is a one-channel convolution with the channel-summed mask kernel (in float64:
  the released random kernels make it a nearly cancelling sum);
- the texture and structure features go through the shared filling streams as one batch, and the streams'
  convolutions use Winograd's minimal filtering (`winograd.py`, selectable with
  `MEDConfig.partial_conv_implementation`), about 2.3x fewer multiplications;
- the decoder's transposed convolutions on grids of at most 8x8 run as one matrix product and a col2im;
- the Gaussian (spatial) equalisation is separable and is applied as two small matrix products instead of
  materialising a (positions x channels x positions) tensor;
- every sample of a batch uses its own mask and its own equalisation (the released code is batch-1 only).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_med import MEDConfig
from .harmonic import harmonic_fill, push_pull_fill
from .winograd import MAX_KERNEL_SIZE, transform_kernel, winograd_conv2d, winograd_plan

# Spatial reduction between the image and the grid on which features are filled and equalised.
# The default model ships inside the package; `from_pretrained()` without an argument loads it.
DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
FEATURE_STRIDE = 8
# Total downsampling of the encoder: image sides must be multiples of it.
SIZE_MULTIPLE = 64
# Grids of at most this many cells (8x8) run the decoder's transposed convolutions as a matrix product.
SMALL_GRID = 64


@dataclass
class MEDInpaintingOutput(ModelOutput):
    """
    Output of [`MEDModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Auxiliary branch loss: mean L1 between the structure-branch image and the downsampled structure
            target plus mean L1 between the texture-branch image and the downsampled ground truth. Only returned
            when `structure_labels` and/or `labels` are passed (the terms of the missing targets are left out).
        reconstruction (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
            Raw decoder output in [-1, 1]. It is **not** composited: pixels outside the hole are the network's
            reconstruction too, so paste the known pixels back for a final image.
        structure (`torch.FloatTensor` of shape `(batch_size, 3, height / 8, width / 8)`):
            Image predicted from the structure branch features, in [-1, 1].
        texture (`torch.FloatTensor` of shape `(batch_size, 3, height / 8, width / 8)`):
            Image predicted from the texture branch features, in [-1, 1].
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    structure: torch.FloatTensor | None = None
    texture: torch.FloatTensor | None = None


def reflect_pad(hidden: torch.Tensor, padding: int) -> torch.Tensor:
    """Reflection padding that also works when `padding` is not smaller than the map (tiny bottlenecks).

    For `padding < min(height, width)` this is exactly `F.pad(mode="reflect")`; beyond that the reflection
    is repeated, which lets 64x64 and 128x128 images run through the 4-pixel-padded bottleneck blocks.
    """
    height, width = hidden.shape[-2:]
    if padding < min(height, width):
        return F.pad(hidden, (padding, padding, padding, padding), mode="reflect")
    rows = _reflected_indices(height, padding, hidden.device)
    cols = _reflected_indices(width, padding, hidden.device)
    return hidden.index_select(-2, rows).index_select(-1, cols)


def _reflected_indices(size: int, padding: int, device: torch.device) -> torch.Tensor:
    positions = torch.arange(-padding, size + padding, device=device)
    if size == 1:
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    positions = positions.remainder(period)
    return torch.where(positions >= size, period - positions, positions)


class MEDInstanceNorm(nn.InstanceNorm2d):
    """Instance normalisation that also accepts 1x1 maps (64-pixel images reach them at the bottleneck).

    A single value normalised by its own mean is 0, so the output is the affine bias (or 0); torch refuses
    such inputs instead.
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[-1] * hidden.shape[-2] > 1:
            return super().forward(hidden)
        normalized = torch.zeros_like(hidden)
        if self.affine:
            normalized = normalized * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return normalized


class MEDConvBlock(nn.Module):
    """Convolution, optional instance normalisation, optional LeakyReLU: the unit most MEDFE layers are made of."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        *,
        config: MEDConfig,
        norm: str | None = "plain",
        activation: bool = True,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        self.norm = (
            None if norm is None else MEDInstanceNorm(out_channels, eps=config.norm_eps, affine=norm == "affine")
        )
        self.slope = config.leaky_relu_slope if activation else None

    def forward(self, hidden: torch.Tensor, size: torch.Size | None = None) -> torch.Tensor:
        """With `size`, the input is bilinearly resized to it first (the released code's order).

        A bias-free 1x1 convolution commutes with bilinear resizing (both are linear and the resize weights sum
        to 1), so the convolution runs at the smaller of the two sizes: the same numbers at a fraction of the cost.
        """
        if size is not None and hidden.shape[-2:] != size:
            if self.conv.kernel_size != (1, 1) or self.conv.bias is not None:
                raise ValueError("only a bias-free 1x1 convolution can be moved across a resize")
            if hidden.shape[-2] * hidden.shape[-1] > size[0] * size[1]:
                hidden = self.conv(_resize(hidden, size))
            else:
                hidden = _resize(self.conv(hidden), size)
        else:
            hidden = self.conv(hidden)
        if self.norm is not None:
            hidden = self.norm(hidden)
        if self.slope is not None:
            hidden = F.leaky_relu(hidden, self.slope)
        return hidden


class MEDResidualBlock(nn.Module):
    """Bottleneck residual block: reflection-padded dilated 3x3 conv, IN, ReLU, 3x3 conv, IN, plus the input."""

    def __init__(self, config: MEDConfig):
        super().__init__()
        channels = 8 * config.base_channels
        self.dilation = config.residual_dilation
        self.conv1 = nn.Conv2d(channels, channels, 3, dilation=self.dilation, bias=False)
        self.norm1 = MEDInstanceNorm(channels, eps=config.norm_eps)
        self.conv2 = nn.Conv2d(channels, channels, 3, bias=False)
        self.norm2 = MEDInstanceNorm(channels, eps=config.norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        branch = F.relu(self.norm1(self.conv1(reflect_pad(hidden, self.dilation))))
        branch = self.norm2(self.conv2(reflect_pad(branch, 1)))
        return hidden + branch


class MEDEncoder(nn.Module):
    """Six stride-2 4x4 convolutions and a residual bottleneck.

    Returns the six skips: levels 1-5 LeakyReLU-activated (the released code activates them in place when the
    next level reads them), level 6 the bottleneck output without activation.
    """

    def __init__(self, config: MEDConfig):
        super().__init__()
        base = config.base_channels
        widths = [2 * config.num_channels, base, 2 * base, 4 * base, 8 * base, 8 * base, 8 * base]
        self.down_blocks = nn.ModuleList(
            MEDConvBlock(
                widths[i],
                widths[i + 1],
                kernel_size=4,
                stride=2,
                padding=1,
                bias=True,
                norm="affine" if 0 < i < 5 else None,
                activation=i < 5,
                config=config,
            )
            for i in range(6)
        )
        self.residual_blocks = nn.ModuleList(MEDResidualBlock(config) for _ in range(config.num_residual_blocks))

    def forward(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for block in self.down_blocks:
            hidden = block(hidden)
            skips.append(hidden)
        for block in self.residual_blocks:
            hidden = block(hidden)
        skips[-1] = hidden
        return skips


class MEDPartialConv(nn.Module):
    """Bias-free partial convolution (stride 1, 'same' padding) with a per-sample single-channel valid mask.

    The valid mask is identical across channels (it comes from the pixel hole mask), so it is carried as
    `(batch, 1, h, w)`, or `None` when every position is valid. With `renorm="released"` the output is divided
    by the valid mask convolved with the frozen `mask_weight` kernel (random in the released checkpoints; a
    one-channel convolution with the channel-summed kernel gives the same divisor). With `"valid_ratio"` it is
    scaled by window size / valid taps (Liu et al., 2018). Positions whose window holds no valid tap output 0
    and stay invalid. `implementation` chooses how the feature convolution is computed (see `winograd.py`).
    The random divisor is released quirk Q3 (docs/released_quirks.md).
    """

    def __init__(self, channels: int, kernel_size: int, renorm: str, implementation: str = "direct"):
        super().__init__()
        self.kernel_size = kernel_size
        self.renorm = renorm
        # The Winograd tilings cover kernels up to MAX_KERNEL_SIZE; larger ones compute directly (same results).
        self.implementation = implementation if kernel_size <= MAX_KERNEL_SIZE else "direct"
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        if renorm == "released":
            self.mask_weight = nn.Parameter(torch.empty_like(self.weight), requires_grad=False)
        else:
            self.register_parameter("mask_weight", None)
        # Tensors derived from the weights (Winograd-transformed kernel, summed mask kernel), reused between
        # calls while no gradient flows to their source: {name: (version of the source tensor, derived tensor)}.
        self._derived: dict[str, tuple[tuple, torch.Tensor]] = {}

    def forward(self, hidden: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        padding = self.kernel_size // 2
        if valid is not None:
            hidden = hidden * valid
        if self.implementation == "winograd":
            plan = winograd_plan(self.kernel_size)
            kernel = self.derived("winograd", self.weight, lambda weight: transform_kernel(weight, plan))
            output = winograd_conv2d(hidden, kernel, plan)
        else:
            output = F.conv2d(hidden, self.weight, padding=padding)

        # The divisor only depends on the mask, so it is computed from a single channel.
        mask = valid if valid is not None else output.new_ones(1, 1, *output.shape[-2:])
        if self.renorm == "released":
            # A sum of up to 256 * k * k random taps that can nearly cancel (|divisor| down to 1e-5 and below), so
            # float32 summation order would show in the output: summed in float64 it is the exact divisor, rounded.
            kernel = self.derived("mask_sum", self.mask_weight, _channel_sum_in_float64)
            divisor = F.conv2d(mask.to(kernel.dtype), kernel, padding=padding).to(output.dtype)
        else:
            ones = mask.new_ones(1, 1, self.kernel_size, self.kernel_size)
            divisor = F.conv2d(mask, ones, padding=padding) / self.kernel_size**2
        if valid is None:
            return output / divisor, None
        new_valid = F.max_pool2d(valid, self.kernel_size, stride=1, padding=padding)
        safe_divisor = torch.where(new_valid > 0, divisor, torch.ones_like(divisor))
        return torch.where(new_valid > 0, output / safe_divisor, torch.zeros_like(output)), new_valid

    def derived(self, name: str, source: torch.Tensor, compute) -> torch.Tensor:
        """`compute(source)`, kept while `source` is unchanged unless a gradient must flow back to it."""
        if torch.is_grad_enabled() and source.requires_grad:
            return compute(source)
        version = (source.data_ptr(), source._version, source.dtype, source.device)
        if name not in self._derived or self._derived[name][0] != version:
            # A plain tensor even under inference mode: autograd may later save it for another input's gradient.
            with torch.inference_mode(False), torch.no_grad():
                self._derived[name] = (version, compute(source))
        return self._derived[name][1]


def _channel_sum_in_float64(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, k, k) -> (out, 1, k, k) summed over input channels, in float64 where the device has it (not MPS)."""
    exact = torch.float32 if weight.device.type == "mps" else torch.float64
    return weight.to(exact).sum(dim=1, keepdim=True)


class MEDPartialConvBlock(nn.Module):
    """One layer of a multi-scale filling stream: partial convolution, affine instance norm, LeakyReLU."""

    def __init__(self, config: MEDConfig, kernel_size: int):
        super().__init__()
        channels = 4 * config.base_channels
        self.conv = MEDPartialConv(
            channels, kernel_size, config.partial_conv_renorm, config.partial_conv_implementation
        )
        self.norm = MEDInstanceNorm(channels, eps=config.norm_eps, affine=True)
        self.slope = config.leaky_relu_slope

    def forward(self, hidden: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden, valid = self.conv(hidden, valid)
        return F.leaky_relu(self.norm(hidden), self.slope), valid


class MEDFeatureEqualization(nn.Module):
    """Channel equalisation (squeeze-and-excitation) followed by spatial and range ("bilateral") propagation.

    The spatial branch averages every grid position with a Gaussian over the whole grid (truncated at the
    border and renormalised); the range branch averages its 3x3 neighbourhood with softmax weights of the
    mean sigmoid-feature affinity. With `layout="released"` both results are reinterpreted from
    (positions x channels) to (channels x height x width) without a transpose, as the released code does
    (released quirk Q4, docs/released_quirks.md).
    """

    def __init__(self, config: MEDConfig):
        super().__init__()
        channels = 8 * config.base_channels
        self.sigma = config.gaussian_sigma
        self.layout = config.equalization_layout
        self.channel_squeeze = nn.Conv2d(channels, channels // config.se_reduction, 1)
        self.channel_excite = nn.Conv2d(channels // config.se_reduction, channels, 1)
        self.projection = MEDConvBlock(2 * channels, channels, 1, config=config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate = hidden.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.channel_excite(F.relu(self.channel_squeeze(gate))))
        hidden = hidden * gate
        spatial = self.spatial_propagation(hidden)
        affinity = self.range_propagation(hidden)
        if self.layout == "released":
            spatial, affinity = _positions_as_channels(spatial), _positions_as_channels(affinity)
        return self.projection(torch.cat([spatial, affinity], dim=1))

    def spatial_propagation(self, hidden: torch.Tensor) -> torch.Tensor:
        # The normalised 2-D Gaussian factorises into row and column Gaussians, each normalised on its own.
        rows = _gaussian_matrix(hidden.shape[-2], self.sigma, hidden)
        cols = _gaussian_matrix(hidden.shape[-1], self.sigma, hidden)
        return rows @ hidden @ cols.T

    @staticmethod
    def range_propagation(hidden: torch.Tensor) -> torch.Tensor:
        height, width = hidden.shape[-2:]
        similarity = torch.sigmoid(hidden)
        padded_similarity = F.pad(similarity, (1, 1, 1, 1))
        padded_hidden = F.pad(hidden, (1, 1, 1, 1))
        offsets = [(dy, dx) for dy in range(3) for dx in range(3)]
        logits = torch.stack(
            [
                (similarity * padded_similarity[..., dy : dy + height, dx : dx + width]).mean(dim=1)
                for dy, dx in offsets
            ],
            dim=1,
        )
        weights = logits.softmax(dim=1)
        output = torch.zeros_like(hidden)
        for k, (dy, dx) in enumerate(offsets):
            output = output + weights[:, k : k + 1] * padded_hidden[..., dy : dy + height, dx : dx + width]
        return output


def _gaussian_matrix(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(size, dtype=torch.float64, device=like.device)
    weights = torch.exp(-((positions[:, None] - positions[None, :]) ** 2) / (2 * sigma**2))
    return (weights / weights.sum(dim=1, keepdim=True)).to(like.dtype)


def _positions_as_channels(hidden: torch.Tensor) -> torch.Tensor:
    """Reinterpret a (batch, positions, channels) result as (batch, channels, height, width), no transpose."""
    return hidden.flatten(2).transpose(1, 2).reshape(hidden.shape)


class MEDFEBlock(nn.Module):
    """The MEDFE block between encoder and decoder.

    1. Re-organisation: the three shallow encoder levels become texture features and the three deep levels
       structure features, each on the 1/8-resolution grid.
    2. Multi-scale filling: three streams of partial convolutions (3x3, 5x5, 7x7), shared by both branches.
    3. Auxiliary branch images: a shared 1x1-conv + tanh head, supervised with structure / ground truth.
    4. Fusion and feature equalisation.
    5. Redistribution: the equalised features are mapped back to every encoder level and added to its skip.
    """

    def __init__(self, config: MEDConfig):
        super().__init__()
        base = config.base_channels
        inner, fused = 4 * base, 8 * base
        self.feature_mask = config.feature_mask

        def block(cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, **kw) -> MEDConvBlock:
            return MEDConvBlock(cin, cout, kernel, stride, padding, config=config, **kw)

        self.texture_level1 = nn.Sequential(block(base, 2 * base, 4, 2, 1), block(2 * base, inner, 4, 2, 1))
        self.texture_level2 = block(2 * base, inner, 4, 2, 1)
        self.texture_level3 = block(inner, inner)
        self.structure_projection = block(fused, inner)
        self.merge = block(3 * inner, inner)
        self.filling_streams = nn.ModuleList(
            nn.ModuleList(MEDPartialConvBlock(config, k) for _ in range(config.partial_conv_layers))
            for k in config.partial_conv_kernel_sizes
        )
        self.branch_head = nn.Conv2d(inner, config.num_channels, 1)
        self.fuse = block(2 * inner, fused)
        self.equalization = MEDFeatureEqualization(config)
        self.to_level1 = block(fused, base)
        self.to_level2 = block(fused, 2 * base)
        self.to_level3 = block(fused, inner)
        self.to_level4 = block(fused, fused, 4, 2, 1, activation=False)
        self.to_level5 = nn.Sequential(block(fused, fused, 4, 2, 1), block(fused, fused, 4, 2, 1, activation=False))
        self.to_level6 = nn.Sequential(
            block(fused, fused, 4, 2, 1),
            block(fused, fused, 4, 2, 1),
            block(fused, fused, 4, 2, 1, activation=False),
        )
        self.slope = config.leaky_relu_slope

    def forward(
        self, skips: list[torch.Tensor], mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        grid = skips[2].shape[-2:]
        levels = [F.leaky_relu(skip, self.slope) for skip in skips]
        texture = self.merge(
            torch.cat(
                [
                    self.texture_level1(levels[0]),
                    self.texture_level2(levels[1]),
                    self.texture_level3(levels[2]),
                ],
                dim=1,
            )
        )
        structure = self.merge(torch.cat([self.structure_projection(level, size=grid) for level in levels[3:]], dim=1))

        # Both branches share the filling streams, so they run as one batch: [texture; structure].
        batch = mask.shape[0]
        valid = self.valid_feature_mask(mask, grid)
        filled = self.fill(torch.cat([texture, structure]), None if valid is None else valid.repeat(2, 1, 1, 1))
        texture, structure = self.merge(filled).split(batch)

        structure_image = torch.tanh(self.branch_head(structure))
        texture_image = torch.tanh(self.branch_head(texture))
        equalized = self.equalization(self.fuse(torch.cat([structure, texture], dim=1)))

        outputs = [
            self.to_level1(equalized, size=skips[0].shape[-2:]),
            self.to_level2(equalized, size=skips[1].shape[-2:]),
            self.to_level3(equalized),
            self.to_level4(equalized),
            self.to_level5(equalized),
            self.to_level6(equalized),
        ]
        return [out + skip for out, skip in zip(outputs, skips, strict=True)], structure_image, texture_image

    def valid_feature_mask(self, mask: torch.Tensor, grid: torch.Size) -> torch.Tensor | None:
        """(batch, 1, h, w) valid mask on the feature grid, or `None` when no position is a hole."""
        if self.feature_mask == "released":
            # The released code averages the mask with three strided 1/16 kernels and keeps values > 1: an
            # average of values in [0, 1] never exceeds 1, so no feature position is ever a hole (released quirk
            # Q2, docs/released_quirks.md).
            return None
        stride = mask.shape[-1] // grid[-1]
        return 1.0 - mask[..., ::stride, ::stride]

    def fill(self, hidden: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        streams = []
        for stream in self.filling_streams:
            out, out_valid = hidden, valid
            for layer in stream:
                out, out_valid = layer(out, out_valid)
            streams.append(out)
        return torch.cat(streams, dim=1)


def _resize(hidden: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if hidden.shape[-2:] == size:
        return hidden
    return F.interpolate(hidden, size=tuple(size), mode="bilinear", align_corners=False)


class MEDDecoderBlock(nn.Module):
    """ReLU, stride-2 4x4 transposed convolution, then affine instance norm (none for the output block)."""

    def __init__(self, in_channels: int, out_channels: int, config: MEDConfig, is_output: bool = False):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)
        self.norm = None if is_output else MEDInstanceNorm(out_channels, eps=config.norm_eps, affine=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(hidden)
        if hidden.shape[-2] * hidden.shape[-1] <= SMALL_GRID:
            hidden = self.matmul_transposed_conv(hidden)
        else:
            hidden = self.conv(hidden)
        return hidden if self.norm is None else self.norm(hidden)

    def matmul_transposed_conv(self, hidden: torch.Tensor) -> torch.Tensor:
        """`self.conv(hidden)` as one matrix product and a col2im: several times faster on a few grid cells,
        where the convolution libraries are inefficient."""
        batch, _, height, width = hidden.shape
        columns = self.conv.weight.flatten(1).T @ hidden.flatten(2)  # (batch, out * 4 * 4, height * width)
        output = F.fold(columns, (2 * height, 2 * width), kernel_size=4, stride=2, padding=1)
        return output + self.conv.bias[:, None, None]


class MEDDecoder(nn.Module):
    """Six upsampling blocks; blocks 2-6 read [previous output, skip] concatenated in that order.

    Returns the output block's pre-activation (batch, 3, H, W); the model applies the tanh.
    """

    def __init__(self, config: MEDConfig):
        super().__init__()
        base = config.base_channels
        self.up_blocks = nn.ModuleList(
            [
                MEDDecoderBlock(8 * base, 8 * base, config),
                MEDDecoderBlock(16 * base, 8 * base, config),
                MEDDecoderBlock(16 * base, 4 * base, config),
                MEDDecoderBlock(8 * base, 2 * base, config),
                MEDDecoderBlock(4 * base, base, config),
                MEDDecoderBlock(2 * base, config.num_channels, config, is_output=True),
            ]
        )

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        hidden = self.up_blocks[0](skips[-1])
        for block, skip in zip(self.up_blocks[1:], reversed(skips[:-1]), strict=True):
            hidden = block(torch.cat([hidden, skip], dim=1))
        return hidden


class MEDZeroConv2d(nn.Conv2d):
    """A convolution that `_init_weights` starts at zero: the last layer of a residual branch."""


# The fill each `MEDConfig.hole_prior` gives the refinement head.
_HOLE_PRIOR_FILLS = {"harmonic": push_pull_fill, "exact_harmonic": harmonic_fill}


class MEDRefinementHead(nn.Module):
    """Full-resolution correction of the decoder output (not in the paper).

    The decoder's finest skip connection is at half resolution, so next to the hole boundary it cannot match
    the known pixels the way classical diffusion inpainting does. Three 3x3 convolutions (the middle one
    dilated) read the decoder's image, the filled input and the hole mask at full resolution and add a
    correction to the decoder's pre-tanh output. The correction starts at zero, so adding the head to a trained
    model leaves its output unchanged until the head is trained.

    With a `config.hole_prior` the head also reads a smooth membrane fill of the hole (`"harmonic"`: the approximate
    `push_pull_fill`; `"exact_harmonic"`: the converged `harmonic_fill`) and returns a per-pixel blend
    `gate * image + (1 - gate) * prior`, the gate predicted by the head. Smooth fills score well near the hole
    boundary and in flat regions, the decoder where there is structure to continue; the gate learns which is which.
    Its convolution starts at zero (gate 0.5, an even blend).
    """

    def __init__(self, config: MEDConfig):
        super().__init__()
        channels, width = config.num_channels, config.refinement_channels
        self.conv_in = nn.Conv2d(2 * channels + 1, width, 3, padding=1)
        self.conv_mid = nn.Conv2d(width, width, 3, padding=2, dilation=2)
        self.conv_out = MEDZeroConv2d(width, channels, 3, padding=1)
        self.prior_fill = _HOLE_PRIOR_FILLS.get(config.hole_prior)
        uses_prior = self.prior_fill is not None
        # Zero-initialised too, so the prior can be added to a trained head without changing its features.
        self.prior_in = MEDZeroConv2d(channels, width, 3, padding=1) if uses_prior else None
        self.gate_out = MEDZeroConv2d(width, 1, 3, padding=1) if uses_prior else None
        self.slope = config.leaky_relu_slope

    def forward(self, logits: torch.Tensor, filled: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """`logits` (B, 3, H, W) pre-tanh decoder output, `filled` (B, 3, H, W) in [-1, 1], `hole` (B, 1, H, W).

        Returns the reconstruction (B, 3, H, W) in [-1, 1].
        """
        hidden = self.conv_in(torch.cat([torch.tanh(logits), filled, hole], dim=1))
        prior = None
        if self.prior_in is not None:
            prior = self.prior_fill(filled, hole)
            hidden = hidden + self.prior_in(prior)
        hidden = F.leaky_relu(hidden, self.slope)
        hidden = F.leaky_relu(self.conv_mid(hidden), self.slope)
        image = torch.tanh(logits + self.conv_out(hidden))
        if prior is None:
            return image
        gate = torch.sigmoid(self.gate_out(hidden))
        return gate * image + (1 - gate) * prior


class MEDPreTrainedModel(PreTrainedModel):
    config_class = MEDConfig
    base_model_prefix = "med"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["MEDEncoder", "MEDFEBlock", "MEDDecoder"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original initialisation: every convolution kernel ~ N(0, 0.02), biases 0, norm scales 1.

        The refinement head's output convolutions (not in the original) start at zero instead.

        This includes the frozen partial-convolution mask kernels, which is how the released checkpoints got
        their random divisors; loaded tensors are never touched (the `init` helpers skip them).
        """
        std = self.config.initializer_range
        if isinstance(module, MEDZeroConv2d):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MEDPartialConv):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.mask_weight is not None:
                init.normal_(module.mask_weight, mean=0.0, std=std)
        elif isinstance(module, nn.InstanceNorm2d) and module.affine:
            init.ones_(module.weight)
            init.zeros_(module.bias)


class MEDModel(MEDPreTrainedModel):
    """
    The MEDFE generator: encoder, MEDFE block (multi-scale filling, feature equalisation) and decoder, plus the
    optional full-resolution refinement head (`config.refinement_channels`, `config.hole_prior`).

    Example:

    ```python
    >>> import torch
    >>> from med_hf import MEDModel

    >>> model = MEDModel.from_pretrained().eval()  # the shipped default model; or a folder / Hub repo id
    >>> image = torch.rand(1, 3, 256, 256) * 2 - 1  # RGB in [-1, 1]
    >>> mask = torch.zeros(1, 1, 256, 256)
    >>> mask[..., 96:160, 96:160] = 1  # 1 = hole
    >>> with torch.inference_mode():
    ...     output = model(pixel_values=image, mask=mask)
    >>> result = output.reconstruction * mask + image * (1 - mask)
    ```
    """

    def __init__(self, config: MEDConfig):
        super().__init__(config)
        self.encoder = MEDEncoder(config)
        self.medfe = MEDFEBlock(config)
        self.decoder = MEDDecoder(config)
        self.refinement = MEDRefinementHead(config) if config.refinement_channels else None
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        structure_labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> MEDInpaintingOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                RGB image in [-1, 1]; height and width must be multiples of 64. Pixels inside the hole are
                ignored: the model overwrites them with the configured fill colour.
            mask (`torch.FloatTensor` of shape `(batch_size, 1, height, width)`):
                Hole mask, 1 = missing (values > 0.5 count as holes), 0 = known.
            labels (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
                Ground-truth image in [-1, 1], target of the texture branch image.
            structure_labels (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
                Structure image (RTV-smoothed ground truth) in [-1, 1], target of the structure branch image.

        Returns:
            [`MEDInpaintingOutput`] or a tuple `(loss?, reconstruction, structure, texture)`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hole = self._check_inputs(pixel_values, mask)

        # Built here rather than held as a buffer: meta-device loading would leave a buffer uninitialised.
        fill = pixel_values.new_tensor(self.config.hole_fill_value).view(1, -1, 1, 1) / 127.5 - 1.0
        filled = torch.where(hole, fill, pixel_values)
        hole_mask = hole.to(pixel_values.dtype)
        known = (1 - hole_mask).expand(-1, self.config.num_channels, -1, -1)
        skips = self.encoder(torch.cat([filled, known], dim=1))
        skips, structure, texture = self.medfe(skips, hole_mask)
        logits = self.decoder(skips)
        reconstruction = torch.tanh(logits) if self.refinement is None else self.refinement(logits, filled, hole_mask)

        loss = None
        if labels is not None or structure_labels is not None:
            loss = sum(
                F.l1_loss(prediction, _resize(target, prediction.shape[-2:]))
                for prediction, target in ((structure, structure_labels), (texture, labels))
                if target is not None
            )
        if not return_dict:
            return tuple(v for v in (loss, reconstruction, structure, texture) if v is not None)
        return MEDInpaintingOutput(loss=loss, reconstruction=reconstruction, structure=structure, texture=texture)

    def _check_inputs(self, pixel_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        channels = self.config.num_channels
        if pixel_values.ndim != 4 or pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {channels}, height, width), got {tuple(pixel_values.shape)}"
            )
        height, width = pixel_values.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height == 0 or width == 0:
            raise ValueError(
                f"height and width must be positive multiples of {SIZE_MULTIPLE}, got {height}x{width}; "
                "resize or pad the image (MEDInpaintPipeline does this for any size)"
            )
        expected = (pixel_values.shape[0], 1, height, width)
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask must have shape {expected} to match pixel_values, got {tuple(mask.shape)}")
        hole = mask > 0.5
        # One NaN among the known pixels spreads through every convolution to the whole output; the hole's own
        # values are never read, so they may hold anything.
        non_finite = ~torch.isfinite(pixel_values) & ~hole
        if non_finite.any():
            raise ValueError(
                f"pixel_values holds {int(non_finite.sum())} NaN or infinite values outside the hole; "
                "known pixels must be finite"
            )
        return hole

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, *args, **kwargs):
        """Like [`PreTrainedModel.from_pretrained`], with three safeguards, and the shipped default model when
        called without a path.

        - A checkpoint that lacks the frozen mask kernels is refused: they are random numbers fixed at training
          time, and initialising them anew would silently give a different network.
        - A weights file that cannot be read (truncated or corrupt safetensors, a pickle holding more than
          tensors, which `weights_only` loading refuses for safety) raises `OSError` naming the folder.
        - Weights holding NaN or infinite values raise `ValueError` naming the tensor: such a model would fill
          holes with garbage.
        """
        if pretrained_model_name_or_path is None:
            if not (DEFAULT_MODEL_DIR / "config.json").is_file():
                raise OSError(f"the default model is missing from this installation ({DEFAULT_MODEL_DIR})")
            pretrained_model_name_or_path = DEFAULT_MODEL_DIR
        return_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except (SafetensorError, pickle.UnpicklingError, EOFError) as error:
            reason = (
                "the pickle file holds more than tensors, which is refused for safety (weights_only loading)"
                if isinstance(error, pickle.UnpicklingError)
                else f"the weights file is truncated or corrupt ({str(error).splitlines()[0]})"
            )
            raise OSError(f"cannot read the weights of {pretrained_model_name_or_path}: {reason}") from error
        missing = sorted(key for key in info["missing_keys"] if key.endswith("mask_weight"))
        if missing:
            raise OSError(
                f"The checkpoint lacks {len(missing)} frozen partial-convolution mask kernels (e.g. {missing[0]}); "
                "they cannot be regenerated. Convert the original release with "
                "`python -m med_hf.convert_original_checkpoint`."
            )
        check_finite_weights(model)
        return (model, info) if return_info else model


def check_finite_weights(model: nn.Module) -> None:
    """Raise `ValueError` naming the first parameter or buffer of `model` that holds NaN or infinite values."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all():
            raise ValueError(f"the model's weights are corrupt: {name} holds NaN or infinite values")


MEDModel.register_for_auto_class("AutoModel")

__all__ = [
    "DEFAULT_MODEL_DIR",
    "MEDInpaintingOutput",
    "MEDModel",
    "MEDPreTrainedModel",
    "MEDRefinementHead",
]
