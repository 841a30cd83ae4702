"""Winograd convolution of the filling streams: same results as a direct convolution, gradients included."""

import pytest
import torch
import torch.nn.functional as F

from med_hf import MEDConfig, MEDModel
from med_hf.modeling_med import MEDDecoderBlock, MEDPartialConv
from med_hf.winograd import AxisPlan, WinogradPlan, transform_kernel, winograd_conv2d, winograd_plan


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize(("height", "width"), [(32, 32), (13, 7), (1, 5)])
def test_equals_direct_convolution_in_float64(kernel_size, height, width):
    generator = torch.Generator().manual_seed(kernel_size)
    hidden = torch.randn(3, 6, height, width, generator=generator, dtype=torch.float64)
    weight = torch.randn(5, 6, kernel_size, kernel_size, generator=generator, dtype=torch.float64)
    plan = winograd_plan(kernel_size)
    output = winograd_conv2d(hidden, transform_kernel(weight, plan), plan)
    torch.testing.assert_close(output, F.conv2d(hidden, weight, padding=kernel_size // 2), rtol=0, atol=1e-11)


def _magnitude_plan(plan: WinogradPlan) -> WinogradPlan:
    """The same tiling with every transform matrix replaced by its absolute values."""

    def absolute(axis: AxisPlan) -> AxisPlan:
        return AxisPlan(
            axis.tile,
            axis.taps,
            axis.output_transform.abs(),
            axis.kernel_transform.abs(),
            axis.input_transform.abs(),
        )

    return WinogradPlan(plan.kernel_size, absolute(plan.rows), absolute(plan.cols))


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_float32_rounding_within_the_forward_error_bound(kernel_size):
    # Standard forward error analysis (Higham, "Accuracy and Stability of Numerical Algorithms", ch. 3): every
    # output is a sum of products, each term passing through at most n roundings, so in float32
    # |error| <= gamma_n * M with gamma_n = n u / (1 - n u), u = 2^-24, and M the same computation on the absolute
    # values of inputs, weights and transforms. The bound holds for any summation order, hence on any CPU and
    # thread count; a wrong transform or a lost tap is off by a fraction of M itself and fails it.
    generator = torch.Generator().manual_seed(0)
    channels = 64
    hidden = torch.randn(2, channels, 32, 32, generator=generator)
    weight = 0.02 * torch.randn(channels, channels, kernel_size, kernel_size, generator=generator)
    plan = winograd_plan(kernel_size)
    exact = F.conv2d(hidden.double(), weight.double(), padding=kernel_size // 2)
    error = (winograd_conv2d(hidden, transform_kernel(weight, plan), plan).double() - exact).abs()

    magnitude_plan = _magnitude_plan(plan)
    magnitude = winograd_conv2d(
        hidden.double().abs(), transform_kernel(weight.double().abs(), magnitude_plan), magnitude_plan
    )
    rows, cols = plan.rows, plan.cols
    # kernel transform + input transform (two axes) + channel sum + output transform + the rounded constants
    roundings = rows.taps * cols.taps + rows.points + cols.points + channels * plan.row_blocks
    roundings += rows.points * cols.points + 4
    unit = 2.0**-24
    assert (error <= roundings * unit / (1 - roundings * unit) * magnitude).all()

    # The transforms' amplification of magnitudes is a property of the interpolation points (252x, 303x and
    # 1755x the direct convolution's sum of |terms| for k = 3, 5, 7); worse points would show here first.
    direct_magnitude = F.conv2d(hidden.double().abs(), weight.double().abs(), padding=kernel_size // 2)
    assert magnitude.max() < 2000 * direct_magnitude.max()


def test_gradients_equal_those_of_a_direct_convolution():
    winograd_plan.cache_clear()
    with torch.inference_mode():  # a plan first made during inference must still work with autograd
        plan = winograd_plan(7)
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 3, 9, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 7, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 4, 9, 10, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad(
        (winograd_conv2d(hidden, transform_kernel(weight, plan), plan) * upstream).sum(), [hidden, weight]
    )
    expected = torch.autograd.grad((F.conv2d(hidden, weight, padding=3) * upstream).sum(), [hidden, weight])
    for grad, reference in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kernel_size", [1, 4, 9])
def test_only_odd_kernels_from_three_to_seven(kernel_size):
    with pytest.raises(ValueError, match="odd kernel size from 3 to 7"):
        winograd_plan(kernel_size)


def test_partial_conv_computes_larger_kernels_directly():
    conv = MEDPartialConv(2, 9, renorm="valid_ratio", implementation="winograd")
    conv.weight.data.normal_()
    hidden = torch.randn(1, 2, 12, 12)
    assert conv.implementation == "direct"
    torch.testing.assert_close(conv(hidden, None)[0][..., 4:-4, 4:-4], F.conv2d(hidden, conv.weight)[..., 0:4, 0:4])


def test_partial_conv_reuses_the_transformed_kernel_only_while_the_weight_is_unchanged():
    torch.manual_seed(0)
    conv = MEDPartialConv(4, 5, renorm="released", implementation="winograd").double()
    conv.weight.data.normal_()
    conv.mask_weight.data.normal_(0, 0.02)
    hidden, mask = torch.randn(2, 4, 8, 8, dtype=torch.float64), (torch.rand(2, 1, 8, 8) > 0.3).double()
    direct = MEDPartialConv(4, 5, renorm="released", implementation="direct").double()
    direct.load_state_dict(conv.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(conv(hidden, mask)[0], direct(hidden, mask)[0])
        for module in (conv, direct):
            module.weight.mul_(-2)  # an in-place update, as an optimizer step makes
            module.mask_weight.add_(0.01)
        torch.testing.assert_close(conv(hidden, mask)[0], direct(hidden, mask)[0])
    # With gradients on, nothing is cached and the gradient reaches the weight.
    conv(hidden, mask)[0].sum().backward()
    direct(hidden, mask)[0].sum().backward()
    torch.testing.assert_close(conv.weight.grad, direct.weight.grad)


def test_frozen_kernel_cached_during_inference_still_trains_the_input():
    torch.manual_seed(0)
    conv = MEDPartialConv(3, 7, renorm="valid_ratio", implementation="winograd")
    conv.weight.data.normal_()
    conv.weight.requires_grad_(False)
    hidden = torch.randn(1, 3, 9, 9)
    with torch.inference_mode():
        conv(hidden, None)
    hidden.requires_grad_(True)
    conv(hidden, None)[0].square().sum().backward()
    direct = MEDPartialConv(3, 7, renorm="valid_ratio", implementation="direct")
    direct.load_state_dict(conv.state_dict())
    expected = torch.autograd.grad(direct(hidden, None)[0].square().sum(), hidden)[0]
    torch.testing.assert_close(hidden.grad, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_model_outputs_do_not_depend_on_the_implementation():
    torch.manual_seed(0)
    config = MEDConfig.from_preset("tiny", partial_conv_renorm="released", feature_mask="nearest")
    winograd = MEDModel(config).double().eval()
    direct = (
        MEDModel(
            MEDConfig.from_preset(
                "tiny", partial_conv_renorm="released", feature_mask="nearest", partial_conv_implementation="direct"
            )
        )
        .double()
        .eval()
    )
    direct.load_state_dict(winograd.state_dict())
    image = torch.rand(2, 3, 128, 128, dtype=torch.float64) * 2 - 1
    mask = torch.zeros(2, 1, 128, 128, dtype=torch.float64)
    mask[0, :, 20:90, 30:70] = 1
    mask[1, :, 60:120, 10:110] = 1
    with torch.inference_mode():
        torch.testing.assert_close(winograd(image, mask).reconstruction, direct(image, mask).reconstruction)
    with pytest.raises(ValueError, match="partial_conv_implementation"):
        MEDConfig(partial_conv_implementation="fft")


def test_small_grid_transposed_convolution_as_a_matrix_product():
    torch.manual_seed(0)
    block = MEDDecoderBlock(16, 8, MEDConfig.from_preset("tiny"))
    torch.nn.init.normal_(block.conv.bias)
    for size in (1, 4, 8):
        hidden = torch.randn(3, 16, size, size)
        torch.testing.assert_close(block.matmul_transposed_conv(hidden), block.conv(hidden), rtol=1e-5, atol=1e-5)
