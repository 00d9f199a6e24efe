"""A measured target belongs to the CPU it was measured on: ``local-cpu`` resolves to the shipped
file whose ``meta.device`` names this machine's CPU (``latency_models.machine_target``), else to
``local-cpu.json`` with one warning line; every file stays loadable by its own name."""
from __future__ import annotations

import json

import pytest

import latency_models
from search_space.errors import TargetError

AMD, XEON = "AMD EPYC", "Intel(R) Xeon(R) Processor"


def _target(path, device):
    path.write_text(json.dumps({"format": "edgenas-latency-target", "version": 1, "target": path.stem.split("-x")[0],
                                "meta": {"device": f"{device} (2 cores, shared VM)"}}))
    return path


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A target folder with an AMD local-cpu.json, a Xeon local-cpu-xeon.json and pixel-cpu."""
    _target(tmp_path / "local-cpu.json", AMD)
    _target(tmp_path / "local-cpu-xeon.json", XEON)
    _target(tmp_path / "pixel-cpu.json", "Pixel 1")
    monkeypatch.setattr(latency_models, "TARGET_DIR", tmp_path)
    monkeypatch.setattr(latency_models, "_WARNED", set())
    monkeypatch.setattr(latency_models, "_RESOLVED", {})
    return tmp_path


@pytest.mark.parametrize("cpu,file", [(AMD, "local-cpu.json"), (XEON, "local-cpu-xeon.json")])
def test_local_cpu_is_the_file_of_this_machines_cpu(shipped, monkeypatch, capsys, cpu, file):
    monkeypatch.setattr(latency_models, "cpu_name", lambda: cpu)
    assert latency_models.target_path("local-cpu") == shipped / file
    assert latency_models.machine_target("local-cpu", cpu) == shipped / file
    assert capsys.readouterr().err == ""  # a match: no warning


def test_no_file_of_this_cpu_falls_back_to_local_cpu_json_with_one_warning(shipped, monkeypatch, capsys):
    monkeypatch.setattr(latency_models, "cpu_name", lambda: "Apple M2")
    for _ in range(3):
        assert latency_models.target_path("local-cpu") == shipped / "local-cpu.json"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: target local-cpu: ")
    assert "Apple M2" in err and "local-cpu.json" in err and AMD in err
    monkeypatch.setattr(latency_models, "cpu_name", lambda: "")  # unknown CPU: the same fallback
    assert latency_models.target_path("local-cpu") == shipped / "local-cpu.json"


def test_every_file_keeps_its_own_name(shipped, monkeypatch, capsys):
    monkeypatch.setattr(latency_models, "cpu_name", lambda: XEON)
    assert latency_models.targets() == ["local-cpu", "local-cpu-xeon", "pixel-cpu"]
    assert latency_models.target_path("local-cpu-xeon") == shipped / "local-cpu-xeon.json"
    assert latency_models.target_path("local-cpu.json") == shipped / "local-cpu.json"  # the AMD file by file name
    assert latency_models.target_path("local-cpu-xeon.json") == shipped / "local-cpu-xeon.json"
    assert latency_models.target_path("pixel-cpu") == shipped / "pixel-cpu.json"
    with pytest.raises(TargetError) as e:
        latency_models.target_path("nokia")
    assert "\n" not in str(e.value) and "allowed: local-cpu, local-cpu-xeon, pixel-cpu" in str(e.value)
    assert capsys.readouterr().err == ""


def test_the_choice_follows_the_files(shipped, monkeypatch):
    """A file added (or rewritten) later is seen: the choice is cached by the files and their times."""
    monkeypatch.setattr(latency_models, "cpu_name", lambda: "AMD EPYC 9B14")
    assert latency_models.target_path("local-cpu") == shipped / "local-cpu.json"
    _target(shipped / "local-cpu-epyc9.json", "AMD EPYC 9B14")
    assert latency_models.target_path("local-cpu") == shipped / "local-cpu-epyc9.json"


def test_shipped_local_cpu_files_are_one_per_cpu(capsys):
    """The shipped local-cpu files name distinct CPUs; on this machine ``local-cpu`` is the one of its
    CPU if any (and ``load`` gives that file's model), ``local-cpu.json`` otherwise."""
    files = [latency_models.TARGET_DIR / "local-cpu.json"] + sorted(latency_models.TARGET_DIR.glob("local-cpu-*.json"))
    cpus = [latency_models.device_cpu(json.loads(f.read_text())["meta"]["device"]) for f in files]
    assert all(cpus) and len(set(cpus)) == len(cpus), cpus
    for f, cpu in zip(files, cpus):
        assert latency_models.machine_target("local-cpu", cpu) == f
    here = latency_models.cpu_name()
    want = files[cpus.index(here)] if here in cpus else files[0]
    assert latency_models.target_path("local-cpu") == want
    assert latency_models.load("local-cpu").path == str(want)
    assert latency_models.load("local-cpu") is latency_models.load(str(want))


def test_validate_and_the_searchers_take_the_alias(monkeypatch):
    """validate (and the searchers, through latency_models.load) read ``local-cpu`` as this machine's file."""
    from latency_models import validate
    from searchers.cli_common import check_names

    files = [latency_models.TARGET_DIR / "local-cpu.json"] + sorted(latency_models.TARGET_DIR.glob("local-cpu-*.json"))
    cpus = [latency_models.device_cpu(json.loads(f.read_text())["meta"]["device"]) for f in files]
    assert len(cpus) >= 2
    for cpu in cpus:            # on each CPU a file was measured on, local-cpu is that file: validate has no warning
        monkeypatch.setattr(latency_models, "cpu_name", lambda cpu=cpu: cpu)
        monkeypatch.setattr(latency_models, "_RESOLVED", {})
        assert validate.other_cpu(latency_models.load("local-cpu"), cpu) is None, cpu
        for other in files:     # every other CPU's file, named explicitly, gets the warning
            if latency_models.device_cpu(json.loads(other.read_text())["meta"]["device"]) != cpu:
                assert "another CPU" in validate.other_cpu(latency_models.load(other.name), cpu)
    s = type("S", (), {"target": "local-cpu", "space": "mobile-unified", "evaluator": "proxy"})()
    check_names(s)  # accepted


@pytest.mark.parametrize("name", sorted(p.name for p in latency_models.TARGET_DIR.glob("local-cpu-*.json")))
def test_per_cpu_file_refits_from_its_committed_measurements(name, tmp_path):
    """A per-CPU file (e.g. local-cpu-xeon.json) is its committed measurements fitted by this version's
    model: `build --refit` of it (its table's partial file and its network-term networks, as its meta
    names them) gives the same errors and prices; its term was fitted on that CPU's networks only."""
    import random

    import numpy as np

    from latency_models import build
    from search_space import zoo
    from search_space.space import load_space

    shipped = latency_models.load(name)
    assert shipped.term is not None and shipped.meta.get("network_term_crossfit") is True
    out = tmp_path / name
    assert build.main(["--refit", str(latency_models.TARGET_DIR / name), "--out", str(out)]) == 0
    again = latency_models.load(str(out))
    assert again.meta["network_term_from"] == shipped.meta["network_term_from"]
    assert again.pw_align == shipped.pw_align   # a refit keeps the file's 1x1 alignment flag unless told
    for k in ("layers_held_out", "network_term"):
        assert again.error[k] == shipped.error[k], k
    archs = [zoo.get(n) for n in zoo.names()] + [load_space("mobile-unified").sample(random.Random(i)) for i in range(3)]
    np.testing.assert_allclose(again.predict_many(archs), shipped.predict_many(archs), rtol=1e-5)
    cpu = latency_models.device_cpu(shipped.meta["device"])
    for f in build.partial_paths(shipped.meta["network_term_from"], "--networks"):
        assert f.name.startswith(f"{name[:-5]}."), f  # the term's networks: files of this target only
    for f in build.partial_paths(shipped.meta["measurements"]["partial_file"]):
        assert f.name.startswith(f"{name[:-5]}."), f
    assert cpu and cpu != latency_models.device_cpu(latency_models.load("local-cpu.json").meta["device"])


def test_cpu_name_without_proc_cpuinfo(monkeypatch):
    """No readable /proc/cpuinfo: platform.processor()'s name, or '' (then local-cpu falls back to local-cpu.json)."""
    import platform
    from pathlib import Path

    def refuse(self, *a, **k):
        raise OSError("no /proc here")

    latency_models.cpu_name.cache_clear()
    monkeypatch.setattr(Path, "read_text", refuse)
    try:
        assert latency_models.cpu_name() == (platform.processor() or "")
    finally:
        monkeypatch.undo()
        latency_models.cpu_name.cache_clear()


def test_refit_pw_align_overrides_the_files_flag(tmp_path, capsys):
    """``build --refit X --pw-align N`` fits X's measurements with the other 1x1 flag (the shipped Xeon file: 16);
    without it the file's is kept; a file whose meta.pw_align is not 8 or 16 is refused, naming it, before anything
    is read."""
    from latency_models import build

    src = latency_models.TARGET_DIR / "local-cpu-xeon.json"
    parts = build.partial_paths(latency_models.load(src.name).meta["measurements"]["partial_file"])
    kept = build.refit(src, parts, tmp_path / "k.json", save=False)
    eight = build.refit(src, parts, tmp_path / "e.json", save=False, pw_align=8)
    assert kept.meta["pw_align"] == kept.pw_align == 16 and eight.meta["pw_align"] == eight.pw_align == 8
    assert kept.error["layers_held_out"] != eight.error["layers_held_out"]     # other features, other regressor
    d = json.loads(src.read_text())
    d["meta"]["pw_align"] = 4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(TargetError, match=r"bad\.json: meta\.pw_align: got 4; allowed: 8, 16$"):
        build.refit(bad, [tmp_path / "never-read.jsonl"], tmp_path / "x.json", save=False)
