"""SmallMapConv2d: a conv that leaves out the kernel taps which only meet zero padding gives the
plain conv's outputs and gradients, takes the cropped path where it should, and changes no export."""
from __future__ import annotations

import copy
import io
import itertools
import operator
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
    """Every map size 1-8 (H) x 2-9 (W), kernel 2, 3, 5, 7, 9, stride 1-3, padding 0 / 1 / k // 2, dense
    and depthwise: outputs and input / weight / bias gradients equal the plain conv's (float64)."""
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
    for n, s, want in ((1, 1, (1, 1)), (2, 1, (3, 3)), (2, 2, (2, 2)), (3, 1, (5, 5)), (4, 1, (7, 7))):
        conv = use_small_map_convs(nn.Conv2d(8, 8, 7, s, 3, groups=8, bias=False))
        conv(torch.randn(1, 8, n, n))
        assert seen[-1] == want, (n, s)
    assert _live_taps(4, 7, 1, 3) is None and _live_taps(7, 7, 1, 3) is None and _live_taps(8, 7, 2, 3) is None
    assert _live_taps(1, 7, 1, 3) == (3, 4, 0, 0)
    assert _live_taps(2, 7, 2, 3) == (3, 5, 0, 0)
    assert _live_taps(2, 3, 2, 1) == (1, 3, 0, 0)              # off-centre: the window, not the centre
    assert _live_taps(6, 9, 3, 4) == (1, 9, 3, 2)              # unequal left / right padding


def test_crop_off_and_channels_last(monkeypatch):
    """``SmallMapConv2d.crop = False`` runs the full kernel; channels-last weights and inputs (the
    trainers' layout) crop to the same result as the plain conv (float32)."""
    seen = []
    real = nn.functional.conv2d
    monkeypatch.setattr(nn.functional, "conv2d", lambda x, w, *a: seen.append(tuple(w.shape[-2:])) or real(x, w, *a))
    torch.manual_seed(1)
    plain = nn.Conv2d(16, 16, 7, 1, 3, groups=16, bias=False).to(memory_format=torch.channels_last)
    small = use_small_map_convs(copy.deepcopy(plain))
    for n in (1, 2, 3):
        x = torch.randn(4, 16, n, n).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(small(x), plain(x), rtol=1e-5, atol=1e-6)
        assert seen[-2:] == [(2 * n - 1, 2 * n - 1), (7, 7)]       # small: the live taps; plain: all
    monkeypatch.setattr(SmallMapConv2d, "crop", False)
    small(torch.randn(1, 16, 1, 1))
    assert seen[-1] == (7, 7)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_trainers_run_small_map_convs_and_hand_back_plain_ones(monkeypatch, one_thread, tmp_path):
    """train_model / train_arch and Trainer.run train with SmallMapConv2d (each forward goes through it)
    and return models whose convs are nn.Conv2d again (FX, TorchScript and eager quantization expect
    that), the EMA copy too."""
    from search_space.arch import Arch
    from searchers.data import load_dataset
    from searchers.trainer import Trainer, TrainRecipe, scratch_model
    from searchers.training import Recipe, train_arch, train_model

    calls = {"n": 0}
    real = SmallMapConv2d.forward

    def counted(self, x):
        calls["n"] += 1
        return real(self, x)

    monkeypatch.setattr(SmallMapConv2d, "forward", counted)
    data = load_dataset("fashion-mnist", seed=0)
    arch = Arch.from_string("stem_i3_o16_k3_s2_re-mbconv_i16_o24_m48_k7_s2_re-mbconv_i24_o24_m72_k7_s1_re_skip-"
                            "head_l96_h128_re")
    model, stats = train_arch(arch, data, Recipe(epochs=1, images_per_epoch=128, batch_size=64, eval_images=100,
                                                 precise_bn=1), seed=0)
    assert calls["n"] > 0 and stats["steps"] == 2
    assert not any(type(m) is SmallMapConv2d for m in model.modules())
    assert any(type(m) is nn.Conv2d for m in model.modules())
    calls["n"] = 0
    tr = Trainer(arch, data, TrainRecipe(epochs=1, batch_size=32, train_images=64, eval_images=32), tmp_path,
                 scratch_model(arch, 10, 0), progress=False)
    tr.run()
    assert calls["n"] > 0
    for m in (tr.model, tr.ema.module):
        assert not any(type(c) is SmallMapConv2d for c in m.modules())
    tr.test()
    assert not any(type(c) is SmallMapConv2d for c in tr.model.modules())

    def broken(self, x):
        raise RuntimeError("boom")

    monkeypatch.setattr(SmallMapConv2d, "forward", broken)          # an error mid-training: convs handed back
    model = arch.build(num_classes=10)
    with pytest.raises(RuntimeError, match="boom"):
        train_model(model, data, Recipe(epochs=1, images_per_epoch=64, batch_size=64))
    assert not any(type(c) is SmallMapConv2d for c in model.modules())


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
    cropped = []
    for m in small.modules():
        if type(m) is SmallMapConv2d:
            m.register_forward_pre_hook(lambda mod, inp: cropped.append(
                _live_taps(inp[0].shape[-1], mod.kernel_size[1], mod.stride[1], mod.padding[1]) is not None))
    with torch.no_grad():
        torch.testing.assert_close(small(x), plain(x), rtol=1e-4, atol=1e-5)
    assert any(cropped), "no conv of this network was cropped"

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


def test_fx_tracing_sees_the_plain_convolution():
    """FX traces into SmallMapConv2d (it is not a torch.nn leaf) and gets the plain convolution (the whole
    weight, no slicing, no pad), which runs at any size."""
    net = use_small_map_convs(nn.Sequential(nn.Conv2d(8, 8, 7, 1, 3, groups=8), nn.ReLU()))
    gm = torch.fx.symbolic_trace(net)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.conv2d in targets or nn.functional.conv2d in targets, targets
    assert operator.getitem not in targets and nn.functional.pad not in targets, targets
    x = torch.randn(1, 8, 1, 1)
    torch.testing.assert_close(gm(x), net(x), rtol=1e-5, atol=1e-6)
