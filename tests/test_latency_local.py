"""local-cpu tooling: profiler (onnxruntime + torch), resumable build on a tiny sample, validate CLI,
CLI errors, predict_many speed."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import latency_models
from latency_models import build, profile, validate
from search_space.arch import BlockSpec, Signature
from search_space.space import load_space

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]

SIG = Signature("mbconv", BlockSpec("mbconv", 16, 24, mid_ch=64, kernel=5, stride=2, se_ch=16, act="hswish"),
                16, 28, 28)


def test_onnx_runner_is_the_same_network_as_torch():
    import onnxruntime as ort

    m, shape = profile.layer_module(SIG)
    m.eval()
    profile._randomize_bn(m)
    x = torch.randn(*shape)
    data = profile.onnx_bytes(m, x)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = m(x).numpy()
    assert y.shape == (1, 24, 14, 14)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_relative_timing_sees_twice_the_work():
    # two pure-python loops, one twice as long: relative cost ~2 on any machine speed
    def work(n):
        def run():
            s = 0
            for i in range(n):
                s += i
        return run

    m = profile.measure_relative(work(40000), work(20000), rounds=5)
    assert 1.5 < m.rel < 2.7
    assert m.ref_ms > 0 and m.ms == pytest.approx(m.rel * m.ref_ms) and m.n >= 15


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_measure_items_both_backends(backend):
    rows = profile.measure_items([("layer", SIG), ("null", None)], backend, 1, rounds=2)
    assert [r["key"] for r in rows] == [SIG.key, "null"]
    layer, null = rows
    assert layer["ms"] > null["ms"] > 0 and layer["rel"] > 0


def _build_args(tmp_path, passes=2):
    return ["--space", "proxylessnas", "--blocks", "3", "--nets", "1", "--pool", "3", "--zoo", "none",
            "--passes", str(passes), "--rounds", "2", "--out", str(tmp_path / "lc.json"),
            "--partial", str(tmp_path / "lc.partial.jsonl")]


def test_build_small_sample_is_resumable(tmp_path, capsys):
    part = tmp_path / "lc.partial.jsonl"
    assert build.main(_build_args(tmp_path, passes=1)) == 0
    n1 = len(part.read_text().splitlines())
    first = part.read_text().splitlines()
    # a second pass resumes: the first pass is kept, only the second is measured
    assert build.main(_build_args(tmp_path, passes=2)) == 0
    lines = part.read_text().splitlines()
    assert len(lines) == 2 * n1 and lines[:n1] == first
    # a killed run: the partial file ends in a cut line; the build re-measures only what is missing
    part.write_text("\n".join(lines[:n1 + 2]) + "\n" + lines[n1 + 2][:15])
    assert build.main(_build_args(tmp_path, passes=2)) == 0
    rows = [json.loads(x) for x in part.read_text().splitlines()[: n1 + 2]]
    assert [r["key"] for r in rows] == [json.loads(x)["key"] for x in lines[: n1 + 2]]
    done = [json.loads(x) for x in part.read_text().splitlines() if x.startswith("{") and x.endswith("}")]
    assert sorted((r["pass"], r["key"]) for r in done) == sorted({(r["pass"], r["key"]) for r in done})
    assert len({(r["pass"], r["key"]) for r in done}) == 2 * n1

    model = latency_models.load(str(tmp_path / "lc.json"))
    assert model.name == "local-cpu" and len(model.table) == n1 - 2  # minus the null item and one net
    for field in ("device", "runtime", "runtime_version", "threads", "resolutions", "date", "repeats",
                  "reference", "drift", "made_by", "made_from"):
        assert field in model.meta, field
    assert model.meta["runtime"] == "onnxruntime" and model.meta["threads"] == 1
    assert model.meta["reference"]["ms"] > 0
    arch = load_space("proxylessnas").sample(random.Random(5))
    assert model.predict(arch) > 0
    assert sum(ms for _, ms in model.breakdown(arch)) == pytest.approx(model.predict(arch))

    # refit: the same measurements (from their keys alone) fitted again, the build's meta kept
    re_out = tmp_path / "refit.json"
    assert build.main(["--refit", str(tmp_path / "lc.json"), "--partial", str(part), "--out", str(re_out)]) == 0
    again = latency_models.load(str(re_out))
    assert set(again.meta) == set(model.meta) | {"refit"} and again.meta["reference"] == model.meta["reference"]
    assert again.predict(arch) == pytest.approx(model.predict(arch), rel=1e-6)
    assert build.main(["--refit", str(tmp_path / "lc.json"), "--partial", str(tmp_path / "no.jsonl")]) == 2
    assert "--partial: " in capsys.readouterr().err

    # validate a target file not installed: measure once (2 fresh processes), save, re-score offline
    # with a second target on the same measurements
    meas, scores = tmp_path / "measured.json", tmp_path / "scores.json"
    lc = str(tmp_path / "lc.json")
    assert validate.main(["--target", lc, "--space", "proxylessnas", "--archs", "3", "--no-zoo", "--passes", "2",
                          "--rounds", "2", "--save", str(meas), "--png", str(tmp_path / "v.png")]) == 0
    out = capsys.readouterr().out
    assert "pass-to-pass spread" in out and "drift" in out and "load average" in out
    assert "timing noise: round-to-round spread median" in out and "over 6 network timings" in out
    rec = json.loads(meas.read_text())
    assert len(rec["networks"]) == 3 and all(len(n["rel"]) == 2 for n in rec["networks"])
    assert all(len(n["spread"]) == 2 and min(n["spread"]) >= 0 for n in rec["networks"])
    assert validate.main(["--target", lc, "--measured", str(meas), "--also", lc, "--json", str(scores),
                          "--png", str(tmp_path / "v2.png")]) == 0
    got = json.loads(scores.read_text())
    assert got["random_archs"]["n"] == 3 and got["also"][lc]["random_archs"] == got["random_archs"]
    first = validate.score_networks(model, rec, quiet=True)
    assert first["random_archs"] == got["random_archs"]
    assert validate.main(["--target", str(re_out), "--measured", str(meas), "--record", "--png", str(tmp_path / "v3.png")]) == 0
    v = latency_models.load(str(re_out)).error["validation"]
    assert v["random_archs"]["n"] == 3 and "--measured" in v["how"] and v["measured"]["passes"] == 2
    assert validate.main(["--target", lc, "--measured", str(tmp_path / "none.json")]) == 2
    assert "not a measurements file" in capsys.readouterr().err
    assert validate.main(["--target", lc, "--measured", str(meas), "--also", "pixel-cpu"]) == 2
    assert "allowed: targets of onnxruntime, 1 thread(s)" in capsys.readouterr().err


def test_build_and_validate_cli_errors(tmp_path, capsys):
    assert build.main(["--backend", "tvm"]) == 2
    assert "error: --backend: got 'tvm'; allowed: onnxruntime, torch" in capsys.readouterr().err
    assert build.main(["--target", "pixel-cpu"]) == 2
    assert "allowed: local-cpu" in capsys.readouterr().err
    assert build.main(["--space", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "mobile-unified" in err and "Traceback" not in err
    assert validate.main(["--target", "iphone"]) == 2
    assert "allowed: " in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert validate.main(["--target", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json: corrupt target file" in err and err.count("\n") == 1


# Bad counts and options that do not apply: one line naming the field and the allowed values, exit 2,
# refused before anything is measured or written (each case would otherwise start measuring or write --out).
OUT = "/tmp/edgenas-test-never-written.json"
BAD_OPTIONS = [
    (profile.main, ["--arch", "mobilenet_v3_small", "--threads", "0"], "error: --threads: got 0; allowed: an integer >= 1"),
    (profile.main, ["--arch", "mobilenet_v3_small", "--rounds", "0"], "error: --rounds: got 0; allowed: an integer >= 1"),
    (profile.main, ["--arch", "mobilenet_v3_small", "--resolution", "0"],
     "error: --resolution: got 0; allowed: an integer >= 16"),
    (validate.main, ["--target", "local-cpu.json", "--rounds", "0", "--archs", "1", "--no-zoo"],
     "error: --rounds: got 0; allowed: an integer >= 1"),
    (validate.main, ["--target", "local-cpu.json", "--archs", "0", "--no-zoo"],
     "error: --archs: got 0; allowed: an integer >= 1 with --no-zoo (else nothing is measured)"),
    (validate.main, ["--target", "local-cpu.json", "--archs", "-1"], "error: --archs: got -1; allowed: an integer >= 0"),
    (validate.main, ["--target", "local-cpu.json", "--space", "nosuch", "--archs", "1", "--no-zoo"], "error: space: "),
    (validate.main, ["--target", "local-cpu.json", "--measured", "/nope.json", "--rounds", "3"],
     "error: --rounds: does not apply with --measured (nothing is measured); allowed with it: --also, --json, --png, "
     "--record"),
    *[(validate.main, ["--target", t, *opt],
       f"error: {opt[0]}: does not apply to target {t} (published measurements, nothing is measured here); "
       "allowed with it: --png, --json")
      for t, opt in [("pixel-cpu", ["--measured", "/nope.json"]), ("pixel-cpu", ["--space", "nosuch"]),
                     ("pixel-cpu", ["--also", "nosuch"]), ("pixel-cpu", ["--archs", "0"]),
                     ("pixel-cpu", ["--rounds", "0"]), ("note10-cpu", ["--no-zoo"]), ("note10-cpu", ["--record"])]],
    *[(build.main, ["--target", "local-cpu", opt, value, "--out", OUT], f"error: {opt}: got {got}; allowed: {allowed}")
      for opt, value, got, allowed in [("--resolutions", "0", "'0'", "comma-separated integers >= 16"),
                                       ("--resolutions", "224,8", "'224,8'", "comma-separated integers >= 16"),
                                       ("--rounds", "0", "0", "an integer >= 1"),
                                       ("--threads", "0", "0", "an integer >= 1"),
                                       ("--blocks", "-1", "-1", "an integer >= 0"),
                                       ("--nets", "-1", "-1", "an integer >= 0"),
                                       ("--pool", "0", "0", "an integer >= 1"),
                                       ("--passes", "0", "0", "an integer >= 1"),
                                       ("--max-minutes", "0", "0.0", "a number > 0"),
                                       ("--max-minutes", "-1", "-1.0", "a number > 0"),
                                       ("--net-max-mmacs", "-5", "-5.0", "a number >= 0 (0: no limit)")]],
    (build.main, ["--refit", "latency_models/targets/local-cpu-xeon.json", "--measure-layers-of", "table",
                  "--pw-align", "16", "--partial", OUT], "error: --pw-align 16: not with --measure-layers-of"),
]


@pytest.mark.parametrize("main,argv,message", BAD_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_options_are_one_line_before_measuring(main, argv, message, capsys):
    t0 = time.perf_counter()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and captured.err.count("\n") == 1, captured.err
    assert captured.out == ""  # nothing measured, nothing printed
    assert time.perf_counter() - t0 < 20
    assert not Path(OUT).exists()


@pytest.mark.parametrize("module,argv", [
    ("validate", []), ("build", []), ("profile", ["--arch", "mobilenet_v2"]), ("measure_nets", []), ("fit_pixel", []),
    ("fit_note10", []), ("fit_pixel_litert", []), ("mobile_backends", ["--arch", "mobilenet_v2"])])
def test_every_latency_cli_prints_usage_errors_as_one_line(module, argv, capsys):
    import importlib

    main = importlib.import_module(f"latency_models.{module}").main
    prog = f"python -m latency_models.{module}"
    assert main([*argv, "--bogus"]) == 2
    assert capsys.readouterr().err == f"error: {prog}: unrecognized arguments: --bogus; see {prog} --help\n"
    if argv:  # a required option left out
        assert main([]) == 2
        assert capsys.readouterr().err == f"error: {prog}: the following arguments are required: --arch\n"


@pytest.mark.parametrize("argv,message", [
    (["--zoo", "nosuch"], "argument --zoo: invalid choice: 'nosuch' (choose from 'all', 'space', 'none')"),
    (["--rounds", "abc"], "argument --rounds: invalid int value: 'abc'; allowed: a whole number"),
    (["--max-minutes", "soon"], "argument --max-minutes: invalid float value: 'soon'; allowed: a number"),
    (["--pw-align", "12"], "argument --pw-align: invalid choice: 12 (choose from 8, 16)"),
])
def test_build_malformed_values_are_one_line(argv, message, capsys):
    assert build.main([*argv, "--out", OUT]) == 2
    assert capsys.readouterr().err == f"error: python -m latency_models.build: {message}\n"
    assert not Path(OUT).exists()


def test_profile_arch_errors_name_the_zoo(capsys):
    from search_space import zoo

    assert profile.resolve_arch("mobilenet_v3_large@0.75") == zoo.get("mobilenet_v3_large", 0.75)
    assert profile.main(["--arch", "nosuch"]) == 2
    assert capsys.readouterr().err == ("error: --arch: got 'nosuch'; allowed: an arch file (.yaml/.yml/.json/.txt, "
                                       "net.config), an arch string (stem_...-head_...) or a zoo name[@width]: "
                                       f"{', '.join(zoo.names())}\n")
    assert profile.main(["--arch", "stem_i3_o16_k3_s2_hs-head_l576"]) == 2
    assert capsys.readouterr().err == ("error: arch string: has no blocks; allowed: stem_...-<block>-...-head_... "
                                       "(at least one block)\n")
    assert profile.main(["--arch", "mobilenet_v3_large@0.6"]) == 2
    assert capsys.readouterr().err == "error: --arch width (for mobilenet_v3_large): got 0.6; allowed: 1.0, 0.75\n"


def test_measure_nets_bad_counts_are_one_line(tmp_path, capsys):
    from latency_models import measure_nets

    out = tmp_path / "m.jsonl"
    for opt in ("--rounds", "--threads"):
        assert measure_nets.main(["--out", str(out), "--archs", "1", opt, "0"]) == 2
        assert capsys.readouterr().err == f"error: {opt}: got 0; allowed: an integer >= 1\n"
    assert measure_nets.main(["--out", str(out), "--archs", "1", "--resolution", "8"]) == 2
    assert capsys.readouterr().err == "error: --resolution: got 8; allowed: an integer >= 16\n"
    assert not out.exists()


def test_validate_pixel_and_note10_write_json(tmp_path, capsys):
    js = tmp_path / "p.json"
    assert validate.main(["--target", "note10-cpu", "--png", str(tmp_path / "n.png"), "--json", str(js)]) == 0
    got = json.loads(js.read_text())
    assert 0.0 <= got["between_tables"] <= 1.0
    assert f"{got['between_tables']:.0%} of 100" in capsys.readouterr().out


def test_validate_pixel_cli(tmp_path, capsys):
    png = tmp_path / "pixel.png"
    assert validate.main(["--target", "pixel-cpu", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "held-out rows" in out and "MAPE" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_many_throughput():
    model = latency_models.load("pixel-cpu")
    space = load_space("proxylessnas")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(2000)]
    model.predict_many(archs)  # first call prices the unseen layers (vectorized)
    t = time.thread_time()  # CPU time of this thread: other users of a shared machine do not count
    out = model.predict_many(archs)
    rate = len(archs) / (time.thread_time() - t)
    assert out.shape == (2000,) and np.all(out > 0)
    assert rate > 5000, f"{rate:.0f} archs/s"  # the benchmark asks 20,000/s on a quiet core


def test_tree_residual_round_trip():
    from latency_models.features import N_FEATURES
    from latency_models.predictor import Predictor, TreeResidual, fit_predictor

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 5e6, size=(200, N_FEATURES))
    kinds = ["mbconv" if i % 2 else "dwsep" for i in range(200)]
    y = 1e-7 * X[:, 0] * (1 + (X[:, 1] > 2.5e6)) + 0.05  # a step a linear model cannot follow
    p = fit_predictor(kinds, X, y, min_rows=1000)
    lin = p.predict_rows(kinds, X)
    p.residual = TreeResidual.fit(kinds, X, lin, y)  # raises if its arrays do not reproduce sklearn
    both = p.predict_rows(kinds, X)
    assert np.mean(np.abs(both / y - 1)) < 0.5 * np.mean(np.abs(lin / y - 1))
    back = Predictor.from_dict(json.loads(json.dumps(p.to_dict())), "t")
    np.testing.assert_allclose(back.predict_rows(kinds, X), both, rtol=1e-4)  # coefs stored to 6 digits


def test_layers_of_measured_networks_join_the_table(tmp_path, capsys):
    """--measure-layers-of measures exactly the layers of the networks that the target's table lacks
    (resumably); --refit with both measurement files puts them into the table and names both."""
    from search_space.arch import signatures

    assert build.main(_build_args(tmp_path, passes=1)) == 0
    lc, part = tmp_path / "lc.json", tmp_path / "lc.partial.jsonl"
    model = latency_models.load(str(lc))
    arch = load_space("proxylessnas").sample(random.Random(11))
    nets = tmp_path / "nets.jsonl"
    nets.write_text(json.dumps({"space": "proxylessnas", "seed": 7000, "index": 0, "arch": arch.to_string(),
                                "resolution": 64, "backend": "onnxruntime", "threads": 1, "rel": 1.0,
                                "spread": 0.0, "ref_ms": 1.0, "ms": 1.0}) + "\n")
    new = tmp_path / "layers.partial.jsonl"
    args = ["--measure-layers-of", str(nets), "--refit", str(lc), "--partial", str(new), "--passes", "1",
            "--rounds", "2"]
    assert build.main(args) == 0
    missing = {s.key for s in signatures(arch, 64)} - set(model.table.entries)
    rows = [json.loads(x) for x in new.read_text().splitlines()]
    assert missing and {r["key"] for r in rows if r["kind"] == "layer"} == missing
    assert build.main(args) == 0 and len(new.read_text().splitlines()) == len(rows)  # resumed: nothing new
    out = tmp_path / "lc2.json"
    assert build.main(["--refit", str(lc), "--partial", f"{part},{new}", "--out", str(out)]) == 0
    again = latency_models.load(str(out))
    assert set(again.table.entries) == set(model.table.entries) | missing
    assert again.meta["measurements"]["partial_file"] == f"{part},{new}"
    assert all(again.table.entries[k].ms > 0 for k in missing) and again.predict(arch, 64) > 0
    capsys.readouterr()
    assert build.main(["--refit", str(lc), "--partial", f"{part},{tmp_path / 'no.jsonl'}", "--out", str(out)]) == 2
    assert f"--partial: {tmp_path / 'no.jsonl'} does not exist" in capsys.readouterr().err
    assert build.main(["--measure-layers-of", str(nets), "--refit", str(lc)]) == 2
    assert "--partial: required with --measure-layers-of" in capsys.readouterr().err
    torch_nets = tmp_path / "torch_nets.jsonl"  # networks timed on another runtime than the table: refused
    torch_nets.write_text(nets.read_text().replace('"onnxruntime"', '"torch"'))
    assert build.main(["--measure-layers-of", str(torch_nets), "--refit", str(lc), "--partial", str(new)]) == 2
    assert "allowed: onnxruntime x 1 thread(s) only per file" in capsys.readouterr().err

    # 'table': every layer of the table measured again; in a refit a later file's rows of a key replace
    # the earlier files' rows of it (one session's conditions per layer, not a minimum across sessions)
    again_file = tmp_path / "table.partial.jsonl"
    assert build.main(["--measure-layers-of", "table", "--refit", str(lc), "--partial", str(again_file),
                       "--passes", "1", "--rounds", "2"]) == 0
    redo = [json.loads(x) for x in again_file.read_text().splitlines()]
    assert {r["key"] for r in redo if r["kind"] == "layer"} == set(model.table.entries)
    rows_all = build.combine_partials([build._read_partial(f) for f in (part, new, again_file)])
    by_key = {}
    for r in rows_all:
        by_key.setdefault(r["key"], []).append(r)
    for key in model.table.entries:
        assert by_key[key] == [r for r in redo if r["key"] == key]  # the build's passes of it are gone
    assert [r for r in rows_all if r["key"] in missing] == [r for r in rows if r["key"] in missing]
    assert sum(r["kind"] == "null" for r in rows_all) == 3  # each file's own call-overhead row stays
    # and the refit prices every table layer from the later file's measurement, on the pooled time scale
    out3 = tmp_path / "lc3.json"
    assert build.main(["--refit", str(lc), "--partial", f"{part},{new},{again_file}", "--out", str(out3)]) == 0
    third = latency_models.load(str(out3))
    agg = build.aggregate(rows_all)
    for r in redo[1:]:
        want = max(1e-4, (r["rel"] - agg["null_rel"]) * agg["ref_ms"])
        assert third.table.entries[r["key"]].ms == pytest.approx(want, rel=1e-9)
    assert third.meta["reference"]["ms"] == round(agg["ref_ms"], 4) and third.meta["measurements"]["rows"] == len(rows_all)
    assert build.main(["--crossfit", "--partial", str(new)]) == 2
    assert "--crossfit: only with --refit" in capsys.readouterr().err


def test_shipped_local_cpu_refits_from_its_committed_measurements(tmp_path):
    """The shipped local-cpu is the committed measurements fitted by this version's model (build
    --refit), and it carries its validation on networks it was not fitted on."""
    from search_space import zoo

    shipped = latency_models.load("local-cpu.json")
    parts = ",".join(str(p) for p in build.partial_paths(shipped.meta["measurements"]["partial_file"]))
    out = tmp_path / "lc.json"
    assert build.main(["--refit", str(REPO / "latency_models" / "targets" / "local-cpu.json"), "--partial", parts,
                       "--out", str(out)]) == 0
    again = latency_models.load(str(out))
    assert again.meta["network_term_from"] == shipped.meta["network_term_from"]  # the refit fits the term again
    for k in ("layers_held_out", "network_term"):
        assert again.error[k] == shipped.error[k], k
    archs = [zoo.get(n) for n in zoo.names()] + [load_space("mobile-unified").sample(random.Random(i)) for i in range(3)]
    np.testing.assert_allclose(again.predict_many(archs), shipped.predict_many(archs), rtol=1e-5)
    v = shipped.error["validation"]
    assert v["primary"] == "own_time" and 1000 <= v["measured"]["seed"] < 3000  # validate's seeds, never the term's
    term_rows = [r for f in build.partial_paths(shipped.term.fitted_on["from"], "--networks")
                 for r in f.read_text().splitlines()]
    assert v["measured"]["seed"] not in {json.loads(r)["seed"] for r in term_rows}
    own, prev = v["random_archs_own_time"], v["previous_target"]["random_archs_own_time"]
    assert own["n"] == 50 and own["spearman"] >= 0.95 and own["mape_pct"] < prev["mape_pct"]
    assert set(shipped.error["error_sources"]) >= {"measurement_pass_to_pass", "measurement_session_to_session"}


@pytest.mark.parametrize("name", sorted(p.name for p in latency_models.TARGET_DIR.glob("local-cpu*.json")))
def test_shipped_local_cpu_target(name):
    """Every shipped local-cpu file (one per CPU it was measured on: local-cpu.json, local-cpu-*.json)."""
    from search_space import zoo

    assert "local-cpu" in latency_models.targets()
    m = latency_models.load(name)
    assert m.name == "local-cpu" and latency_models.device_cpu(m.meta.get("device"))
    for field in ("device", "runtime", "runtime_version", "threads", "clock", "resolutions", "date", "repeats",
                  "reference", "drift", "made_by", "made_from"):
        assert field in m.meta, field
    assert m.meta["runtime"] == "onnxruntime" and m.meta["threads"] == 1
    assert {"layers_held_out", "network_term"} <= set(m.error)
    assert len(m.table) >= 300 and m.predictor.residual is not None and m.term is not None
    v2 = m.predict(zoo.get("mobilenet_v2"))
    assert 3.0 < v2 < 20.0  # ONNX Runtime, one thread: 7-8 ms on these VMs
    assert m.predict(zoo.get("mobilenet_v3_small")) < v2 < m.predict(zoo.get("mobilenet_v2", 1.4))
    for name in zoo.names():
        rows = m.breakdown(zoo.get(name))
        assert sum(ms for _, ms in rows) == pytest.approx(m.predict(zoo.get(name)))


def test_shipped_local_tflite_target():
    """local-tflite: measured here on LiteRT (XNNPACK, 1 thread); the runtime's versions recorded; every
    zoo network priced, with a breakdown that sums to the prediction."""
    from search_space import zoo

    m = latency_models.load("local-tflite")
    assert m.name == "local-tflite" and m.meta["runtime"] == "tflite" and m.meta["threads"] == 1
    assert "ai-edge-litert" in m.meta["runtime_version"] and "litert-torch" in m.meta["runtime_version"]
    assert {"layers_held_out", "networks_leave_one_out"} <= set(m.error) and len(m.table) >= 100
    v2 = m.predict(zoo.get("mobilenet_v2"))
    assert 3.0 < v2 < 20.0  # LiteRT, one thread: ~7 ms on these VMs
    for name in zoo.names():
        rows = m.breakdown(zoo.get(name))
        assert sum(ms for _, ms in rows) == pytest.approx(m.predict(zoo.get(name)))


def test_tree_tables_reach_the_leaves_the_walk_reaches():
    """The residual forests as tables over feature bins (``TreeResidual.log_ratio``) give the sums
    of walking every tree (``_walk``) to the last bit, on values at the thresholds, just above and
    below them, NaN and infinities, for the shipped local-cpu layer forest and network forest."""
    m = latency_models.load("local-cpu.json")
    for forest in (m.predictor.residual, m.term.trees):
        assert forest._bins() is not None
        rng = np.random.default_rng(1)
        thr = np.concatenate([t["threshold"][~t["leaf"].astype(bool)] for t in forest.trees])
        p = 1 + max(int(t["feature"].max()) for t in forest.trees)
        picks = rng.choice(thr, size=(3000, p))
        Z = np.where(rng.random((3000, p)) < 0.5, picks, rng.normal(0, 5, (3000, p)))
        Z[:1000] = np.nextafter(Z[:1000], np.inf)
        Z[1000:1500] = np.nextafter(Z[1000:1500], -np.inf)
        Z[2000, 3], Z[2001, 5], Z[2002, 0] = np.nan, np.inf, -np.inf
        got, ref = forest.log_ratio(Z), forest._walk(Z)
        assert np.array_equal(got, ref)
        assert len(np.unique(got)) > 1000  # many different leaf combinations met


def test_refit_takes_a_target_written_with_other_features(tmp_path, capsys):
    """A target file whose predictor names another version's features no longer loads (one line naming
    the field and this version's features), and ``build --refit`` still fits it anew from its
    measurements: it reads only the file's meta, so a feature change is a refit, not a re-measurement."""
    from latency_models.model import LatencyModel

    src = REPO / "latency_models" / "targets" / "local-tflite.json"
    d = json.loads(src.read_text())
    feats = d["predictor"]["features"]
    d["predictor"]["features"] = ["dwu_macs" if f == "dwu4_macs" else f for f in feats]
    assert d["predictor"]["features"] != feats
    old = tmp_path / "local-tflite.json"
    old.write_text(json.dumps(d))
    with pytest.raises(latency_models.TargetError, match=r"predictor\.features: do not match this version's features; "
                       r"allowed: .*dwu4_macs"):
        LatencyModel.from_file(old)
    assert validate.main(["--target", str(old), "--archs", "0", "--no-zoo"]) == 2
    assert "predictor.features: do not match" in capsys.readouterr().err
    out = tmp_path / "refit.json"
    assert build.main(["--refit", str(old), "--out", str(out)]) == 0
    again, shipped = latency_models.load(str(out)), latency_models.load("local-tflite")
    assert again.predictor.to_dict()["features"] == feats
    assert again.error["layers_held_out"] == shipped.error["layers_held_out"]
    from search_space import zoo

    a = zoo.get("mobilenet_v2")
    assert again.predict(a) == pytest.approx(shipped.predict(a), rel=1e-6)


def test_noise_line_warns_when_timings_spread_over_three_percent():
    """The line measure_nets and validate print after measuring: median and p90 of the round-to-round
    spreads, a warning over ``NOISY_SPREAD`` (session 10's Xeon: 8.4%; the AMD's quiet networks ~1.1%)."""
    assert profile.noise_line([0.01, 0.012, 0.02]) == ("timing noise: round-to-round spread median 1.2%, p90 1.8% "
                                                       "over 3 networks")
    line = profile.noise_line([0.08] * 9 + [0.2], "network timings")
    assert line.startswith("warning: timing noise: round-to-round spread median 8.0%, p90 9.2% over 10 network "
                           "timings (over 3%: ") and "\n" not in line
    assert profile.noise_line([0.03]).startswith("timing noise:")  # at the threshold: no warning
    assert profile.noise_line([]) == "timing noise: no networks measured"


def test_network_term_on_the_build_time_scale(tmp_path, capsys):
    """``--network-time build`` fits the term on each network's relative cost x the target's reference ms,
    ``own`` on its own time: networks measured while the machine ran at half speed (own times twice their
    build-scale times) give an own-time term twice the build-scale one; the choice is recorded and
    validate scores the model on the same scale."""
    src = REPO / "latency_models" / "targets" / "local-cpu-xeon.json"
    shipped = latency_models.load(str(src))
    ref = shipped.meta["reference"]["ms"]
    rows = [json.loads(x) for x in (REPO / "latency_models" / "targets" / "measurements"
                                    / "local-cpu-xeon.networks-s9-ref5.jsonl").read_text().splitlines()[:30]]
    for r in rows:
        r["ref_ms"] = 2 * ref                # the reference block ran twice as long ...
        r["ms"] = r["rel"] * r["ref_ms"]    # ... and so did each network, relative cost unchanged
    nets = tmp_path / "nets.jsonl"
    nets.write_text("".join(json.dumps(r) + "\n" for r in rows))
    models = {}
    for basis in ("build", "own"):
        out = tmp_path / f"{basis}.json"
        assert build.main(["--refit", str(src), "--no-crossfit", "--networks", str(nets), "--network-time", basis,
                           "--out", str(out)]) == 0
        models[basis] = latency_models.load(str(out))
        assert models[basis].meta["network_term_time"] == basis and models[basis].term.fitted_on["time"] == basis
    from search_space.arch import Arch

    archs = [Arch.from_string(r["arch"]) for r in rows]
    ratio = models["own"].predict_many(archs) / models["build"].predict_many(archs)
    assert np.median(ratio) == pytest.approx(2.0, rel=0.05)
    # the build-scale term prices the measured networks at rel x the target's reference ms
    np.testing.assert_allclose(np.median(models["build"].predict_many(archs) / np.array([r["rel"] * ref for r in rows])),
                               1.0, rtol=0.1)
    record = {"networks": [{"label": f"mobile-unified#{i}", "arch": r["arch"], "rel": [r["rel"]], "ref_ms": [r["ref_ms"]]}
                           for i, r in enumerate(rows)], "passes": 1, "resolution": 224, "space": "mobile-unified",
              "reference_alone_ms": 2 * ref, "machine": {"cpu": latency_models.device_cpu(shipped.meta["device"])}}
    assert validate.score_networks(models["build"], record, quiet=True)["primary"] == "build_scale"
    assert validate.score_networks(models["own"], record, quiet=True)["primary"] == "own_time"
    # a refit without the option keeps the target's recorded basis (and its networks)
    again = tmp_path / "again.json"
    assert build.main(["--refit", str(tmp_path / "build.json"), "--no-crossfit", "--out", str(again)]) == 0
    assert latency_models.load(str(again)).meta["network_term_time"] == "build"
    np.testing.assert_allclose(latency_models.load(str(again)).predict_many(archs),
                               models["build"].predict_many(archs), rtol=1e-6)
    capsys.readouterr()
    assert build.main(["--network-time", "build"]) == 2
    assert capsys.readouterr().err.strip().endswith("allowed: --refit TARGET_FILE [--networks FILES] "
                                                    "--network-time own|build")
    no_ref = json.loads(src.read_text())
    no_ref["meta"].pop("reference")
    bad = tmp_path / "no_ref.json"
    bad.write_text(json.dumps(no_ref))
    assert build.main(["--refit", str(bad), "--no-crossfit", "--networks", str(nets), "--network-time", "build",
                       "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--network-time build" in err and "meta.reference.ms" in err
    assert build.main(["--refit", str(src), "--network-time", "wall"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--network-time" in err and "'own', 'build'" in err


@pytest.mark.parametrize("module,paragraph", [
    ("build", "Measure this machine and write a target measured here: ``local-cpu`` (ONNX Runtime) or ``local-tflite`` "
              "(LiteRT with XNNPACK, the phone's kernels run on this CPU)."),
    ("fit_note10", "Make the ``note10-cpu`` target from the Once-for-All Samsung Galaxy Note10 tables."),
    ("fit_pixel", "Fit the ``pixel-cpu`` target: Google Pixel 1, one big core, TFLite fp32, batch 1 (the protocol of "
                  "the MnasNet and MobileNetV3 papers)."),
])
def test_help_describes_with_the_docstrings_whole_first_paragraph(module, paragraph, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"latency_models.{module}").main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert paragraph in " ".join(out.split())
