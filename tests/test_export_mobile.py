"""Export to the phone runtimes: model.tflite (litert-torch -> LiteRT/XNNPACK) and model.pte (ExecuTorch,
XNNPACK delegate), each run here with its own runtime and compared with torch; CLI; missing-extra errors.

Needs the extras ``edgenas[tflite]`` and ``edgenas[executorch]``: without them these tests fail with
the ExportError that names the extra to install (never a skip).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from search_space.arch import Arch
from search_space.errors import EdgenasError
from search_space.export import (ALL_FORMATS, FORMATS, ExportError, export, lower_pte, main, require, run_exported,
                                 tflite_interpreter)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _weights import trained_like_weights  # noqa: E402

RES = 64          # small input keeps conversion and runs fast; the ops are those of 224
NUM_CLASSES = 10
TOL = 1e-4        # max abs difference from torch, as the issue asks
# one net holding every block family: mbconv (SE with hard-sigmoid and sigmoid gates, h-swish, swish,
# residual), dwsep, sandglass, shufflev2 (stride 2 and the split stride-1 unit), fire, max-pool (ceil),
# plain conv, shufflev1 (groups 3), xception, and a head with last conv + hidden layer
MIXED = ("stem_i3_o16_k3_s2_hs"
         "-mbconv_i16_o24_m64_k3_s2_se16h_hs"
         "-mbconv_i24_o24_m72_k5_s1_se24s_sw_skip"
         "-dwsep_i24_o32_k3_s1_r6"
         "-sandglass_i32_o32_m16_k3_s1_r6_skip"
         "-shufflev2_i32_o64_m32_k3_s2_re"
         "-shufflev2_i64_o64_m32_k3_s1_re"
         "-fire_i64_o64_m16_k3_s1_re"
         "-maxpool_i64_o64_k3_s2_ceil_re"
         "-conv_i64_o48_k1_s1_re"
         "-shufflev1_i48_o48_m12_k3_s1_g3_re"
         "-xception_i48_o64_m64_k3_s2_re"
         "-head_l128_h256_hs")
REQUIRED_TYPES = {"mbconv", "dwsep", "sandglass", "shufflev2"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The mixed net with trained-like weights, exported once to onnx, tflite and pte."""
    torch.set_num_threads(1)
    arch = Arch.from_string(MIXED)
    model = arch.build(NUM_CLASSES).eval()
    model.load_state_dict(trained_like_weights(model, 0, unit_gain=True))
    out = tmp_path_factory.mktemp("mixed")
    notes = []
    written = export(arch, out, formats=("onnx", "tflite", "pte", "yaml"), num_classes=NUM_CLASSES, resolution=RES,
                     state_dict=model.state_dict(), log=notes.append)
    x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(1))[:1]
    with torch.no_grad():
        ref = model(x).numpy()
    return arch, model, written, x, ref, notes


def test_mixed_net_covers_the_block_families():
    arch = Arch.from_string(MIXED)
    assert REQUIRED_TYPES <= {b.type for b in arch.blocks}
    assert arch.to_string() == MIXED


def test_formats_listed():
    assert set(ALL_FORMATS) == set(FORMATS) | {"tflite", "pte"}
    assert "tflite" not in FORMATS and "pte" not in FORMATS  # the base set needs no extra


@pytest.mark.parametrize("fmt", ["tflite", "pte", "onnx"])
def test_runtime_matches_torch(mixed, fmt):
    arch, model, written, x, ref, _ = mixed
    assert written[fmt].name == {"tflite": "model.tflite", "pte": "model.pte", "onnx": "model.onnx"}[fmt]
    y = run_exported(written[fmt], x)
    assert y.shape == (1, NUM_CLASSES)
    assert np.abs(ref).max() > 0.1  # a real output, not one that any diff would hide in
    diff = float(np.abs(y - ref).max())
    assert diff < TOL, f"{fmt}: max abs diff {diff:.3g} from torch"
    # and the runtime really computed the net: another input gives another output
    x2 = torch.randn(1, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref2 = model(x2).numpy()
    y2 = run_exported(written[fmt], x2)
    sensitivity = float(np.abs(ref2 - ref).max())
    assert np.abs(y2 - ref2).max() < TOL and np.abs(y2 - y).max() > 0.5 * sensitivity > 100 * diff


def test_tflite_file_is_fp32_nchw_batch1(mixed):
    written = mixed[2]
    it = tflite_interpreter(written["tflite"])
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert tuple(inp["shape"]) == (1, 3, RES, RES) and inp["dtype"] == np.float32
    assert tuple(out["shape"]) == (1, NUM_CLASSES) and out["dtype"] == np.float32
    assert written["tflite"].read_bytes()[4:8] == b"TFL3"  # the TFLite flatbuffer identifier


def test_pte_is_lowered_to_xnnpack(mixed):
    written, notes = mixed[2], mixed[5]
    data = written["pte"].read_bytes()
    assert data[4:8] == b"ET12"  # ExecuTorch program flatbuffer identifier
    assert b"XnnpackBackend" in data  # the delegate blob is in the program
    # what stayed outside the delegate was reported (the head's mean and ShuffleNetV2's split here),
    # and no convolution was left to the portable kernels
    _, left = lower_pte(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval(),
                        resolution=16)
    assert left == []
    assert all("convolution" not in n for n in notes)


def test_cli_channels_last_tflite_verify(tmp_path, capsys):
    """CLI: an arch string, --format tflite --channels-last --verify: the file takes NHWC and matches."""
    arch = Arch.from_string(MIXED)
    assert main([MIXED, "--out", str(tmp_path), "--format", "tflite", "--resolution", str(RES),
                 "--num-classes", str(NUM_CLASSES), "--channels-last", "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'model.tflite'}" in out
    line = next(l for l in out.splitlines() if l.startswith("verify model.tflite"))
    assert float(line.rsplit(" ", 1)[1]) < TOL
    it = tflite_interpreter(tmp_path / "model.tflite")
    assert tuple(it.get_input_details()[0]["shape"]) == (1, RES, RES, 3)
    # run_exported transposes an NCHW input for a channels-last file; compare with torch directly
    model = arch.build(NUM_CLASSES).eval()
    x = torch.randn(1, 3, RES, RES, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(run_exported(tmp_path / "model.tflite", x) - ref).max() < TOL


def test_missing_extra_names_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes `import litert_torch` fail
    with pytest.raises(ExportError, match=r"pip install 'edgenas\[tflite\]'"):
        require("tflite")
    with pytest.raises(ExportError, match=r"format tflite: needs the litert-torch package"):
        export(Arch.from_string(MIXED), tmp_path / "x", formats=("py", "tflite"), resolution=RES)
    assert not (tmp_path / "x").exists()  # nothing written before the check
    monkeypatch.setitem(sys.modules, "executorch.exir", None)
    with pytest.raises(ExportError, match=r"pip install 'edgenas\[executorch\]'"):
        require("pte")
    assert main(["mobilenet_v1", "--out", str(tmp_path / "y"), "--format", "pte"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: format pte: needs the executorch package") and "Traceback" not in err


def test_bad_format_and_file_errors(tmp_path, capsys):
    with pytest.raises(ExportError, match=r"format.*'tfl'.*tflite, pte"):
        export(Arch.from_string(MIXED), tmp_path, formats="py,tfl")
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"x")
    with pytest.raises(EdgenasError, match=r"model file.*allowed: a \.onnx, \.tflite or \.pte file"):
        run_exported(bad, torch.zeros(1, 3, 8, 8))
    assert main(["mobilenet_v1", "--out", str(tmp_path / "z"), "--format", "py,tflit"]) == 2
    assert "error: format: got 'tflit'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Profiler backends on the phone runtimes (latency_models.mobile_backends)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["tflite", "executorch"])
def test_mobile_backend_times_a_layer_against_the_reference(backend, tmp_path, monkeypatch):
    """A layer through the one signature, timed relative to the reference block on the runtime; the
    converted files are cached by key; ExecuTorch's pool has the asked size."""
    from latency_models import mobile_backends as MB
    from latency_models import profile as P
    from search_space.arch import signatures

    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path))
    monkeypatch.delenv(P.EXPORT_CACHE_ENV, raising=False)  # the test reads the cache: it must be on
    assert backend in P.BACKENDS and P.machine_info(backend)[next(iter(MB.versions(backend)))] != "not installed"
    sig = signatures(Arch.from_string(MIXED), RES)[1]  # the SE mbconv at 32x32
    (row,) = P.measure_items([("layer", sig)], backend, threads=1, rounds=2)  # the one timing loop
    assert row["key"] == sig.key and row["kind"] == "layer" and isinstance(row["undelegated"], list)
    # the reference (MBConv 32->192->32 at 56x56, ~44 M MACs) costs far more than this ~1 M MAC layer
    assert 0.0 < row["rel"] < 0.5 and row["ref_ms"] > 0 and row["ms"] == pytest.approx(row["rel"] * row["ref_ms"], rel=1e-3)
    with P.export_cache(MB.SUFFIX[backend]) as c:
        cached = [c[k] for k in c]
    assert len(cached) == 2  # the reference and the layer
    # the layer again: from the cache (the converters are not called), with its undelegated ops
    import search_space.export as E

    def no(*a, **k):
        raise AssertionError("converted again")
    monkeypatch.setattr(E, "tflite_bytes", no)
    monkeypatch.setattr(E, "lower_pte", no)
    m, shape = P.layer_module(sig)
    data, left = MB.model_bytes(backend, m, torch.randn(*shape), key=f"layer|{sig.key}")
    assert data in cached and sorted(set(left)) == row["undelegated"]
    if backend == "executorch":
        from executorch.extension.pybindings import portable_lib

        assert portable_lib._threadpool_get_thread_count() == 1


def test_mobile_backend_bad_name():
    from latency_models import mobile_backends as MB
    from search_space.errors import TargetError

    from latency_models import profile as P

    with pytest.raises(TargetError, match=r"backend: got 'coreml'; allowed: tflite, executorch"):
        MB.check_backend("coreml")
    assert MB.main(["--arch", "mobilenet_v2", "--backend", "coreml"]) == 2
    with pytest.raises(TargetError, match=r"backend: got 'coreml'; allowed: onnxruntime, torch, tflite, executorch"):
        P.measure_items([("null", None)], "coreml", 1)
    assert P.main(["--arch", "mobilenet_v2", "--backend", "coreml"]) == 2


def test_pixel_litert_candidate_reproduces_from_its_measurements(tmp_path):
    """fit_pixel_litert refits the shipped candidate from the committed LiteRT measurements (no runtime
    needed): same held-out error as recorded, the current pixel-cpu's figures recorded next to it,
    and the 7x7-depthwise finding (MBConv k7's Pixel/LiteRT ratio far below the other types')."""
    import json

    from latency_models import fit_pixel_litert as FPL
    from latency_models.model import LatencyModel

    mpath = FPL.OUT.with_name("pixel-cpu-litert.measurements.json")
    out = tmp_path / "cand.json"
    assert FPL.main(["--fit-only", "--measurements", str(mpath), "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    shipped = json.loads(FPL.OUT.read_text())
    for k in ("held_out", "leave_one_group_out", "single_scale_held_out"):
        assert got["error"][k] == shipped["error"][k]
    assert got["error"]["held_out"]["n"] == 5
    assert got["error"]["held_out_groups"] == ["mnasnet_small@1.0", "mobilenet_v3_small@0.75", "mobilenet_v3_small@1.0"]
    cur = json.loads(FPL.CURRENT.read_text())["error"]
    assert got["error"]["current_pixel_cpu"]["held_out"] == cur["held_out"]
    s = got["meta"]["per_type_scale"]
    assert s["mbconv_k7"] < 0.5 * min(s["mbconv_k3"], s["mbconv_k5"])
    model = LatencyModel.from_file(out)
    from search_space import zoo

    assert 55 < model.predict(zoo.get("mobilenet_v2")) < 75  # published 64 ms (MobileNetV3 paper)
    assert FPL.main(["--fit-only", "--measurements", str(tmp_path / "none.json"), "--out", str(out)]) == 2
