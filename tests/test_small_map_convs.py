"""SmallMapConv2d: a conv that leaves out the kernel taps which only meet zero padding gives the
plain conv's outputs and gradients, takes the cropped path where it should, and changes no export."""
from __future__ import annotations

import io
import itertools
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from search_space.space import load_space
from searchers.training import SmallMapConv2d, _live_taps, use_small_map_convs


def _pair(n_h, n_w, k, s, p, groups, ch=4):
    torch.manual_seed(n_h * 1000 + n_w * 100 + k * 10 + s)
    plain = nn.Conv2d(ch, ch, k, s, p, groups=groups, bias=True).double()
    small = nn.Conv2d(ch, ch, k, s, p, groups=groups, bias=True).double()
    small.load_state_dict(plain.state_dict())
    use_small_map_convs(small)
    return plain, small


CASES = [(n, k, s, p, g) for n, k, s, g in itertools.product(range(1, 9), (2, 3, 5, 7, 9), (1, 2, 3), (1, 4))
         for p in sorted({k // 2, 0, 1}) if n + 2 * p >= k]


def test_outputs_and_gradients_equal_the_plain_conv():
    """Every map size 1-8 (H) x 2-9 (W), kernel 2-9, stride 1-3, padding 0 / 1 / k // 2, dense and
    depthwise: outputs and input / weight / bias gradients equal the plain conv's (float64)."""
    assert len(CASES) > 400
    for n, k, s, p, groups in CASES:
        plain, small = _pair(n, n + 1, k, s, p, groups)
        x0 = torch.randn(2, 4, n, n + 1, dtype=torch.double, requires_grad=True)
        x1 = x0.detach().clone().requires_grad_(True)
        y0, y1 = plain(x0), small(x1)
        assert y0.shape == y1.shape, (n, k, s, p, groups)
        g = torch.randn_like(y0)
        y0.backward(g)
        y1.backward(g)
        for a, b in ((y1, y0), (x1.grad, x0.grad), (small.weight.grad, plain.weight.grad),
                     (small.bias.grad, plain.bias.grad)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=lambda m: f"{(n, k, s, p, groups)}: {m}")


def test_the_cropped_path_runs_only_the_live_taps(monkeypatch):
    """A 7x7 depthwise conv on a 1x1 map uses its centre tap alone, on a 2x2 map its centre 3x3
    (stride 1) or 2x2 (stride 2); on a 4x4 map every tap meets the input, nothing is cropped."""
    seen = []
    real = nn.functional.conv2d
    monkeypatch.setattr(nn.functional, "conv2d", lambda x, w, *a: seen.append(tuple(w.shape[-2:])) or real(x, w, *a))
    for n, s, want in ((1, 1, (1, 1)), (2, 1, (3, 3)), (2, 2, (2, 2)), (3, 1, (5, 5))):
        conv = use_small_map_convs(nn.Conv2d(8, 8, 7, s, 3, groups=8, bias=False))
        conv(torch.randn(1, 8, n, n))
        assert seen[-1] == want, (n, s)
    assert _live_taps(4, 7, 1, 3) is None and _live_taps(7, 7, 1, 3) is None and _live_taps(8, 7, 2, 3) is None
    assert _live_taps(1, 7, 1, 3) == (3, 4, 0, 0)
    assert _live_taps(2, 7, 2, 3) == (3, 5, 0, 0)


def test_a_network_keeps_its_state_and_outputs_and_its_onnx_graph():
    """A mobile-unified network with 7x7 kernels at 32x32 (1x1 and 2x2 maps at the end): same state
    names, outputs within float rounding of the plain build, and the same ONNX graph (export traces the
    plain convolution), which onnxruntime runs to the same outputs."""
    space = load_space("mobile-unified")
    rng = random.Random(3)
    arch = next(a for a in (space.sample(rng) for _ in range(500))
                if any(b.kernel == 7 and b.type == "mbconv" for b in a.blocks[-4:]))
    torch.manual_seed(0)
    plain = arch.build(num_classes=10).eval()
    small = arch.build(num_classes=10).eval()
    small.load_state_dict(plain.state_dict())
    use_small_map_convs(small)
    assert list(small.state_dict()) == list(plain.state_dict())
    assert any(type(m) is SmallMapConv2d for m in small.modules())
    assert not any(type(m) is nn.Conv2d for m in small.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), plain(x), rtol=1e-4, atol=1e-5)

    def export(model):
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"])
        return buf.getvalue()

    a, b = onnx.load_from_string(export(plain)), onnx.load_from_string(export(small))
    assert [(n.op_type, list(n.input)) for n in a.graph.node] == [(n.op_type, list(n.input)) for n in b.graph.node]
    assert [tuple(t.dims) for t in a.graph.initializer] == [tuple(t.dims) for t in b.graph.initializer]
    sess = ort.InferenceSession(b.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], plain(x).detach().numpy(), rtol=1e-3, atol=1e-4)


def test_supernet_subnets_run_small_map_convs():
    """The supernet's subnet templates use SmallMapConv2d; the extracted standalone module (the
    exported structure) keeps nn.Conv2d."""
    from searchers import supernet as S

    space = load_space("mobile-unified")
    recipe = S.default_recipe(space, envelope_samples=50)
    net = S.build_supernet(space, 10, recipe, 0)
    module, _ = net._template(net.largest)
    assert any(type(m) is SmallMapConv2d for m in module.modules())
    assert not any(type(m) is nn.Conv2d for m in module.modules())
    assert not any(type(m) is SmallMapConv2d for m in net.extract(net.largest).modules())
