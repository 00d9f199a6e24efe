"""Export: standalone model.py (fresh interpreter, identical outputs), ONNX (onnxruntime), arch.yaml, CLI."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from search_space.arch import Arch
from search_space.export import export, generate_model_py, load_generated, main
from search_space.importers import from_net_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _weights import trained_like_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
OFA_MBV3 = DATA / "ofa_specialized" / "LG-G8_lat-16ms_top1-74.7_finetune-25.net.config"
RES = 64  # small inputs keep the suite fast; the code paths are the same at 224
NUM_CLASSES = 10
# one zoo net per block type: mbconv (+SE, h-swish), dwsep, shufflev2, sandglass; issue 9: fire + maxpool
# (ceil) + conv classifier + stem without BN (squeezenet1_1), shufflev1, dwsep with SE and (2, 1)
# strides + maxpool (valid) (ppocr_mv1_enhance), mbconv with (2, 1) strides + conv (ppocr_mv3_small_x035)
ZOO_CASES = [("mobilenet_v3_small", 1.0), ("mobilenet_v1", 0.25), ("shufflenet_v2", 0.5), ("mobilenext", 0.5),
             ("squeezenet1_1", 1.0), ("shufflenet_v1_g3", 1.0), ("ppocr_mv1_enhance", 1.0),
             ("ppocr_mv3_small_x035", 1.0)]
# xception blocks in every variant, a valid-padded stem and conv, bare-dw separable convs (a small
# Xception: the full one is 22.9M parameters, too slow for the suite)
XCEPTION_MINI = ("stem_i3_o16_k3_s2_re_valid-conv_i16_o24_k3_s1_valid_re-xception_i24_o32_m32_k3_s2_re_xrelu1=0"
                 "-xception_i32_o32_m32_k3_s1_re_xreps=3-xception_i32_o48_m32_k3_s2_re"
                 "-dwsep_i48_o64_k3_s1_re_xdwbn=0-head_re")


def _arch(case) -> Arch:
    if case == "ofa":
        return from_net_config(OFA_MBV3)
    if case == "xception-mini":
        return Arch.from_string(XCEPTION_MINI)
    from search_space import zoo

    name, width = case
    return zoo.get(name, width=width)


def _case_id(case) -> str:
    return case if isinstance(case, str) else f"{case[0]}@{case[1]:g}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export each case once: {case_id: (arch, out_dir, state_dict, input, framework output)}."""
    torch.set_num_threads(1)
    done = {}

    def get(case):
        cid = _case_id(case)
        if cid not in done:
            arch = _arch(case)
            model = arch.build(NUM_CLASSES).eval()
            sd = trained_like_weights(model, seed=len(done))
            model.load_state_dict(sd)
            out = tmp_path_factory.mktemp(cid.replace("@", "_"))
            written = export(arch, out, formats=("py", "onnx", "yaml", "pt"), num_classes=NUM_CLASSES,
                             resolution=RES, state_dict=sd, name=cid)
            assert set(written) == {"py", "onnx", "yaml", "pt"}
            x = torch.randn(2, 3, RES, RES, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                y = model(x)
            torch.save({"x": x, "y": y}, out / "io.pt")
            done[cid] = (arch, out, sd, x, y)
        return done[cid]

    return get


ALL_CASES = ["ofa", "xception-mini", *ZOO_CASES]


@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_onnx_matches_torch(exported, case):
    import onnx
    import onnxruntime as ort

    arch, out, sd, x, y = exported(case)
    m = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(m)
    assert m.opset_import[0].version == 17
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": x.numpy()})  # batch 2: the batch axis is dynamic
    assert got.shape == (2, NUM_CLASSES)
    diff = np.abs(got - y.numpy()).max()
    # 1e-4 absolute; nets without BN (SqueezeNet) reach logits in the hundreds with these random
    # weights, where float32 rounding alone is a few 1e-5 per op: there the bound is 1e-6 relative
    assert diff < max(1e-4, 1e-6 * float(np.abs(y.numpy()).max())), diff


FRESH = textwrap.dedent("""
    import sys

    EDGENAS = ("search_space", "searchers", "latency_models", "experiments")


    class BlockEdgenas:  # the repo is installed in the venv: make it unimportable here
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in EDGENAS:
                raise ImportError("edgenas is blocked in this interpreter: " + name)
            return None


    sys.meta_path.insert(0, BlockEdgenas())
    try:
        import search_space  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("the block does not work")
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[1])
    import model
    assert "search_space" not in sys.modules, "model.py pulled in edgenas"
    net = model.build(num_classes=int(sys.argv[2])).eval()
    net.load_state_dict(torch.load(sys.argv[1] + "/weights.pt", weights_only=True), strict=True)
    io = torch.load(sys.argv[1] + "/io.pt", weights_only=True)
    with torch.no_grad():
        y = net(io["x"])
    diff = (y - io["y"]).abs().max().item()
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("search_space", "searchers", "latency_models"))
    print("diff", diff, "equal", torch.equal(y, io["y"]), "leaked", leaked)
    assert diff < 1e-6, diff
    assert not leaked, leaked
""")


@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_model_py_standalone_loads_framework_weights(exported, case, tmp_path):
    arch, out, sd, x, y = exported(case)
    source = (out / "model.py").read_text()
    # imports only torch
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] == "torch" for a in node.names), ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module.split(".")[0] == "torch", node.module
    # the arch string sits in the docstring and ARCH, and parses back to the arch
    mod = load_generated(source)
    assert arch.to_string() in mod.__doc__ and Arch.from_string(mod.ARCH) == arch
    # same state_dict keys and shapes as the framework module, in the same order
    ours = [(k, tuple(v.shape)) for k, v in arch.build(NUM_CLASSES).state_dict().items()]
    theirs = [(k, tuple(v.shape)) for k, v in mod.build(num_classes=NUM_CLASSES).state_dict().items()]
    assert ours == theirs
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    # -I: isolated mode, no PYTHONPATH, no cwd on sys.path; run from outside the repo
    r = subprocess.run([sys.executable, "-I", str(script), str(out), str(NUM_CLASSES)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "leaked []" in r.stdout


@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_arch_yaml_round_trips(exported, case):
    arch, out, *_ = exported(case)
    assert Arch.load(out / "arch.yaml") == arch
    assert Arch.from_yaml((out / "arch.yaml").read_text()).to_string() == arch.to_string()


def test_model_py_has_one_class_per_block_type_used():
    arch = from_net_config(OFA_MBV3)
    source = generate_model_py(arch, num_classes=1000, name="ofa")
    classes = [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    assert classes == ["ConvBNAct", "SqueezeExcite", "MBConv", "Stem", "Head", "Ofa"]
    assert source.count("MBConv(in_ch=") == len(arch.blocks)
    assert "def build(num_classes=1000):" in source


def test_export_rejects_bad_arguments(tmp_path):
    from search_space.errors import EdgenasError

    arch = from_net_config(OFA_MBV3)
    with pytest.raises(EdgenasError, match="format: got 'coreml'; allowed: py, onnx, yaml, pt, tflite, pte"):
        export(arch, tmp_path, formats=("py", "coreml"))
    with pytest.raises(EdgenasError, match="resolution: got 0"):
        export(arch, tmp_path, resolution=0)
    sd = arch.build(1000).state_dict()
    sd.pop(next(iter(sd)))
    with pytest.raises(EdgenasError, match="weights: do not fit the arch"):
        export(arch, tmp_path, formats=("yaml",), state_dict=sd)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def test_cli_zoo_name(tmp_path, capsys):
    from search_space import zoo

    out = tmp_path / "mbv1"
    assert main(["mobilenet_v1", "--width", "0.25", "--out", str(out), "--format", "py,yaml",
                 "--num-classes", "10", "--resolution", "32"]) == 0
    text = capsys.readouterr().out
    arch = zoo.get("mobilenet_v1", width=0.25)
    assert f"arch: {arch.to_string()}" in text
    assert sorted(p.name for p in out.iterdir()) == ["arch.yaml", "model.py"]
    assert Arch.load(out / "arch.yaml") == arch
    mod = load_generated((out / "model.py").read_text())
    assert Arch.from_string(mod.ARCH) == arch and "class MobileNetV1" in (out / "model.py").read_text()


def test_cli_net_config(tmp_path, capsys):
    out = tmp_path / "ofa"
    assert main([str(OFA_MBV3), "--out", str(out), "--format", "yaml"]) == 0
    assert Arch.load(out / "arch.yaml") == from_net_config(OFA_MBV3)
    assert main([str(tmp_path), "--out", str(out)]) == 2  # a directory is not an arch file
    assert "is not a file" in capsys.readouterr().err


def test_cli_arch_file_subprocess(tmp_path):
    arch = from_net_config(OFA_MBV3)
    src = tmp_path / "net.yaml"
    arch.save(src)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "search_space.export", str(src), "--out", str(out),
                        "--resolution", "32", "--num-classes", "5"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["arch.yaml", "model.onnx", "model.py"]
    assert Arch.load(out / "arch.yaml") == arch
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert y.shape == (1, 5)


@pytest.mark.parametrize("kind", ["unknown-zoo-name", "missing-file", "malformed-yaml", "bad-width", "bad-format",
                                  "bad-weights"])
def test_cli_bad_input(tmp_path, kind):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "w.pt")
    args = {
        "bad-weights": [str(OFA_MBV3), "--weights", str(tmp_path / "w.pt")],
        "unknown-zoo-name": ["mobilenet_v9"],
        "missing-file": [str(tmp_path / "nope.yaml")],
        "malformed-yaml": [str(tmp_path / "bad.yaml")],
        "bad-width": ["mobilenet_v1", "--width", "0.33"],
        "bad-format": ["mobilenet_v1", "--format", "py,coreml"],
    }[kind]
    (tmp_path / "bad.yaml").write_text("stem: {out_ch: 16\nblocks: [\n")
    r = subprocess.run([sys.executable, "-m", "search_space.export", *args, "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    expect = {"unknown-zoo-name": "mobilenet_v9", "missing-file": "does not exist", "malformed-yaml": "malformed YAML",
              "bad-width": "--width", "bad-format": "coreml", "bad-weights": "weights: do not fit"}[kind]
    assert expect in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    prog = "python -m search_space.export"
    assert main(["mobilenet_v1", "--out", str(tmp_path / "o"), "--bogus"]) == 2
    assert capsys.readouterr().err == f"error: {prog}: unrecognized arguments: --bogus; see {prog} --help\n"
    assert main(["mobilenet_v1", "--out", str(tmp_path / "o"), "--resolution", "big"]) == 2
    assert capsys.readouterr().err == (f"error: {prog}: argument --resolution: invalid int value: 'big'; "
                                       "allowed: a whole number\n")
    assert main(["mobilenet_v1"]) == 2
    assert capsys.readouterr().err == f"error: {prog}: the following arguments are required: --out\n"
    assert not (tmp_path / "o").exists()


def test_cli_name_at_width_and_the_allowed_list(tmp_path, capsys):
    from search_space import zoo
    from search_space.export import resolve_arch

    assert resolve_arch("mobilenet_v3_large@0.75") == (zoo.get("mobilenet_v3_large", 0.75), "mobilenet_v3_large@0.75")
    assert resolve_arch("mobilenet_v3_large@1") == (zoo.get("mobilenet_v3_large"), "mobilenet_v3_large")
    out = tmp_path / "o"
    assert main(["mobilenet_v3_large@0.75", "--out", str(out), "--format", "yaml"]) == 0
    assert Arch.load(out / "arch.yaml") == zoo.get("mobilenet_v3_large", 0.75)
    capsys.readouterr()
    bad = [(["mobilenet_v3_large@0.6"], "error: NAME_OR_ARCH_FILE width (for mobilenet_v3_large): got 0.6; allowed: "
                                        "1.0, 0.75\n"),
           (["mobilenet_v3_large@0.75", "--width", "0.75"], "error: --width: got 0.75; allowed: only without name@width "
                                                             "(got mobilenet_v3_large@0.75)\n"),
           (["nosuch"], "error: NAME_OR_ARCH_FILE: got 'nosuch'; allowed: an arch file (.yaml/.yml/.json/.txt, "
                        "net.config), an arch string (stem_...-head_...) or a zoo name[@width]: "
                        f"{', '.join(zoo.names())}\n")]
    for argv, message in bad:
        assert main([*argv, "--out", str(tmp_path / "bad")]) == 2
        assert capsys.readouterr().err == message
    assert not (tmp_path / "bad").exists()


def test_cli_weights_that_are_not_a_state_dict(tmp_path, capsys):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    for path, why in ((text, "cannot read " + str(text) + " ("),  # (what torch.load raised)
                      (tmp_path / "list.pt", "got 'list'")):
        assert main(["mobilenet_v2", "--weights", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --weights: {why}") and err.count("\n") == 1, err
        assert err.endswith("allowed: a state_dict .pt of mobilenet_v2 (torch.save(model.state_dict(), path))\n"), err
    assert not (tmp_path / "o").exists()
