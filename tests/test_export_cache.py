"""The export caches (``latency_models.profile.export_cache``): ONNX / .tflite / .pte exports of
measured items are kept on disk by key so that later passes (fresh processes) reuse them, within a
size limit (``EDGENAS_EXPORT_CACHE_GB``, least recently used evicted; ``0``: off)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latency_models import profile as P
from search_space.arch import BlockSpec, Signature
from search_space.errors import TargetError

REPO = Path(__file__).resolve().parents[1]
TINY = "0.0001"  # GiB: 107,374 bytes
TINY_BYTES = int(0.0001 * 2**30)
# real layers whose ONNX exports are ~12-55 kB (below and above diskcache's 32 kB file threshold)
MIDS = (64, 128, 192, 256, 320, 96)


def _layer(mid: int, hw: int = 8):
    sig = Signature("mbconv", BlockSpec("mbconv", 16, 16, mid_ch=mid, kernel=3, stride=1, act="relu6",
                                        residual=True), 16, hw, hw)
    m, shape = P.layer_module(sig)
    m.eval()
    torch.manual_seed(mid)
    return m, torch.randn(*shape), f"layer|{sig.key}"


@pytest.fixture
def exports(monkeypatch, tmp_path):
    """EDGENAS_CACHE in tmp_path, and a count of the real torch.onnx.export calls."""
    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path))
    monkeypatch.delenv(P.EXPORT_CACHE_ENV, raising=False)
    calls = []
    real = torch.onnx.export

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(torch.onnx, "export", counting)
    return calls


def _stored(kind: str) -> dict[str, bytes]:
    with P.export_cache(kind) as c:
        return {k: c[k] for k in c}


def test_default_limit_and_location(exports, tmp_path, monkeypatch):
    assert P.export_cache_limit() == 4 * 2**30
    monkeypatch.setenv(P.EXPORT_CACHE_ENV, "2.5")
    assert P.export_cache_limit() == int(2.5 * 2**30)
    with P.export_cache("onnx") as c:
        assert c.size_limit == int(2.5 * 2**30) and c.eviction_policy == "least-recently-used"
        assert Path(c.directory) == tmp_path / "exports" / "onnx"


def test_second_export_of_a_key_comes_from_the_cache(exports, tmp_path):
    m, x, key = _layer(128)
    first = P.onnx_bytes(m, x, key)
    assert len(exports) == 1
    again = P.onnx_bytes(m, x, key)
    assert again == first and len(exports) == 1  # identical bytes, torch.onnx.export not called again
    assert list(_stored("onnx").values()) == [first]
    P.onnx_bytes(m, x)  # no key: not cached, exported again
    assert len(exports) == 2 and len(_stored("onnx")) == 1
    # the same bytes are a real, runnable export of the layer
    import onnxruntime as ort

    sess = ort.InferenceSession(again, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = m(x).numpy()
    assert abs(sess.run(None, {"x": x.numpy()})[0] - ref).max() < 1e-4


def test_volume_stays_under_a_tiny_limit(exports, tmp_path, monkeypatch):
    """Six real layer exports (~190 kB together) through a 107 kB cache: after every write the
    cache's volume (diskcache's own measure: its SQLite file plus the stored files) and the sum of
    the stored values are within the limit, and exports were evicted."""
    monkeypatch.setenv(P.EXPORT_CACHE_ENV, TINY)
    assert P.export_cache_limit() == TINY_BYTES == 107374
    sizes = []
    for mid in MIDS:
        sizes.append(len(P.onnx_bytes(*_layer(mid))))
        with P.export_cache("onnx") as c:
            assert c.volume() <= TINY_BYTES
        assert sum(map(len, _stored("onnx").values())) <= TINY_BYTES
    assert sum(sizes) > 1.5 * TINY_BYTES and max(sizes) > 2**15  # some went to files, eviction was needed
    assert len(_stored("onnx")) < len(MIDS)
    # on disk: the files diskcache stores plus its database stay within the limit too (the WAL
    # journal is sqlite's, checkpointed at 1000 pages)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "exports" / "onnx").rglob("*")
                  if p.is_file() and not p.name.endswith(("-wal", "-shm")))
    assert on_disk <= TINY_BYTES
    assert len(exports) == len(MIDS)


def test_eviction_is_least_recently_used(exports, monkeypatch):
    """Layer exports of ~3 kB are stored one by one, the first one read again after each: when the
    cache overflows, diskcache evicts a batch of the 10 least recently used -- the second to the
    eleventh stored, not the first (read last) nor the newest."""
    monkeypatch.setenv(P.EXPORT_CACHE_ENV, TINY)

    def keys():
        with P.export_cache("onnx") as c:
            return set(c)  # iterating reads no value: the access times stay as they are
    first = _layer(8, 4)
    a = P.onnx_bytes(*first)
    order = list(keys())
    for hw in range(5, 40):
        before = keys()
        P.onnx_bytes(*_layer(8, hw))
        order += sorted(keys() - before)
        assert P.onnx_bytes(*first) == a  # a read: the first is now more recent than the others
        now = keys()
        if len(now) < len(before) + 1:
            break
    else:
        pytest.fail("the cache never overflowed")
    assert len(order) > 12, len(order)
    assert now == {order[0], *order[11:]}
    assert len(exports) == len(order)  # the reads of the first never exported it again


def test_an_export_larger_than_the_limit_is_not_stored(exports, tmp_path, monkeypatch):
    monkeypatch.setenv(P.EXPORT_CACHE_ENV, TINY)
    small = P.onnx_bytes(*_layer(64))
    m, x, key = _layer(1024)
    big = P.onnx_bytes(m, x, key)
    assert len(big) > TINY_BYTES
    assert list(_stored("onnx").values()) == [small]  # not stored, and nothing evicted for it
    assert P.export_cache_put("onnx", "big", big) is False
    assert P.onnx_bytes(m, x, key) == big and len(exports) == 3  # exported again each time


def test_zero_turns_the_cache_off(exports, tmp_path, monkeypatch):
    monkeypatch.setenv(P.EXPORT_CACHE_ENV, "0")
    assert P.export_cache("onnx") is None
    m, x, key = _layer(128)
    assert P.onnx_bytes(m, x, key) == P.onnx_bytes(m, x, key)
    assert len(exports) == 2  # exported both times
    assert P.export_cache_get("onnx", "anything") == (None, None)
    assert P.export_cache_put("onnx", "anything", b"x") is False
    assert list(tmp_path.rglob("*")) == []  # nothing written


@pytest.mark.parametrize("value", ["lots", "-1", "nan", "inf"])
def test_bad_value_is_one_line(value, exports, monkeypatch, capsys):
    monkeypatch.setenv(P.EXPORT_CACHE_ENV, value)
    msg = f"EDGENAS_EXPORT_CACHE_GB: got '{value}'; allowed: a number of GiB >= 0 (0 turns the export cache off)"
    with pytest.raises(TargetError) as e:
        P.onnx_bytes(*_layer(64))
    assert str(e.value) == msg and len(exports) == 0  # refused before exporting
    assert P.main(["--arch", "mobilenet_v2", "--resolution", "32"]) == 2
    assert capsys.readouterr().err == f"error: {msg}\n"


def test_a_fresh_process_reuses_the_export(exports, tmp_path):
    """The cache's purpose: a measuring pass in a new process gets the export without exporting."""
    m, x, key = _layer(256)
    data = P.onnx_bytes(m, x, key)
    torch.save((m, x), tmp_path / "item.pt")
    code = (
        "import hashlib, sys, torch\n"
        "from latency_models import profile as P\n"
        "def no(*a, **k): raise SystemExit('exported again')\n"
        "torch.onnx.export = no\n"
        f"m, x = torch.load({str(tmp_path / 'item.pt')!r}, weights_only=False)\n"
        f"print(hashlib.sha1(P.onnx_bytes(m, x, {key!r})).hexdigest())\n")
    env = {**os.environ, "EDGENAS_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hashlib.sha1(data).hexdigest()


def test_a_cache_that_cannot_be_used_costs_a_re_export_not_the_measurement(exports, monkeypatch, capsys):
    # a full disk: the export in hand is returned, one warning, then the kind goes uncached for the process
    m, x, key = _layer(128)
    monkeypatch.setattr(P, "_CACHE_WARNED", set())
    cache = P.export_cache("onnx")

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cache, "set", full)
    first = P.onnx_bytes(m, x, key)
    assert first[:2] and len(exports) == 1
    assert P.export_cache("onnx") is None
    assert P.onnx_bytes(m, x, key) == first and len(exports) == 2  # exported again, not lost, no retry
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: export cache ") and "OSError" in err[0]
    assert "EDGENAS_EXPORT_CACHE_GB=0" in err[0]


def test_a_damaged_cache_db_costs_a_re_export_not_the_measurement(exports, tmp_path, monkeypatch, capsys):
    m, x, key = _layer(128)
    monkeypatch.setattr(P, "_CACHE_WARNED", set())
    monkeypatch.setattr(P, "_EXPORT_CACHES", {})
    db = tmp_path / "exports" / "onnx" / "cache.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database" * 100)
    data = P.onnx_bytes(m, x, key)
    assert data[:2] and len(exports) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: export cache ") and "DatabaseError" in err[0]
    assert P.export_cache("onnx") is None  # the kind goes uncached for the process: no failing open per item
