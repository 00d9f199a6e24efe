"""What the target-fitting scripts share: the published Pixel 1 rows and their fixed held-out split,
leave-one-group-out, table entries as regression rows, and one error summary.

Used by ``latency_models.fit_pixel`` (regressor on the ProxylessNAS table + published rows),
``fit_pixel_litert`` (LiteRT layer times x per-type scale), ``fit_note10`` (OFA tables), ``build``
(local targets) and ``validate``: every error figure in a target file comes out of ``error_stats``.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from latency_models.features import FEATURES, SCALE, layer_features
from search_space.arch import signatures
from search_space.errors import DataError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
DEVICE = "pixel1-cpu-1bigcore-tflite-fp32"
HELD_OUT_FRACTION = 0.3
SPLIT_SEED = 0
OLD_TFLITE_SOURCE = "Sandler et al. 2018"

# published network name -> zoo name
ZOO_NAMES = {
    "MobileNetV1": "mobilenet_v1", "MobileNetV2": "mobilenet_v2", "MobileNetV3-Large": "mobilenet_v3_large",
    "MobileNetV3-Small": "mobilenet_v3_small", "MnasNet-A1": "mnasnet_a1", "MnasNet-B1": "mnasnet_b1",
    "MnasNet-small": "mnasnet_small", "ProxylessNAS (mobile)": "proxylessnas_mobile", "FBNet-C": "fbnet_c",
    "ShuffleNetV2": "shufflenet_v2", "MobileNeXt": "mobilenext",
}
ONE = FEATURES.index("one")


def error_stats(pred, true, spearman: bool = True) -> dict[str, Any]:
    """n, MAPE (%), share within +/-10%, max error (%), and Spearman's rho (None under 3 rows)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    rel = np.abs(pred - true) / true
    out: dict[str, Any] = {"n": int(len(true)), "mape_pct": round(100 * float(rel.mean()), 2),
                           "within_10pct": round(float((rel <= 0.10).mean()), 3),
                           "max_err_pct": round(100 * float(rel.max()), 2)}
    if spearman:
        from scipy.stats import spearmanr

        out["spearman"] = round(float(spearmanr(pred, true).statistic), 4) if len(true) > 2 else None
    return out


# --------------------------------------------------------------------------------------------
# Published whole-network rows (Pixel 1) and their split
# --------------------------------------------------------------------------------------------
@dataclass
class NetRow:
    network: str
    zoo: str
    width: float
    resolution: int
    ms: float
    source: str
    X: np.ndarray        # scaled feature sum over the network's layers ("one" zeroed)
    macs: float

    @property
    def group(self) -> tuple[str, float]:
        return (self.zoo, self.width)

    @property
    def old_tflite(self) -> bool:
        return self.source.startswith(OLD_TFLITE_SOURCE)


def published_rows(data: Path, log=print, device: str = DEVICE) -> list[NetRow]:
    """The rows of ``published_latency.csv`` measured on ``device`` whose network is in our zoo."""
    from search_space import zoo
    from search_space.profile import profile

    path = data / "published_latency.csv"
    if not path.is_file():
        raise DataError(f"{path}: published latency file does not exist")
    rows = []
    skipped = set()
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r.get("device") != device:
                continue
            name = ZOO_NAMES.get(r["network"])
            if name is None:
                skipped.add(r["network"])
                continue
            width, res = float(r["width_mult"]), int(r["resolution"])
            arch = zoo.get(name, width)
            X = np.stack([layer_features(s) for s in signatures(arch, res)]).sum(0) * SCALE
            X[ONE] = 0.0
            rows.append(NetRow(r["network"], name, width, res, float(r["latency_ms"]), r["source"], X,
                               profile(arch, res)["macs"] / 1e6))
    for n in sorted(skipped):
        log(f"note: skipped published rows of {n!r}: not in our zoo")
    return rows


def split(rows: Sequence, fraction: float = HELD_OUT_FRACTION, seed: int = SPLIT_SEED) -> tuple[list, list]:
    """(train, held out): the rows' groups (``.group``) shuffled by ``random.Random(seed)``, the first
    ``fraction`` (rounded) held out, every row of a held-out group with them."""
    groups = sorted({r.group for r in rows})
    random.Random(seed).shuffle(groups)
    held = set(groups[:round(fraction * len(groups))])
    return [r for r in rows if r.group not in held], [r for r in rows if r.group in held]


def split_note(fraction: float = HELD_OUT_FRACTION, seed: int = SPLIT_SEED) -> str:
    return f"(network, width) groups shuffled by random.Random({seed}); first {fraction:.0%} held out"


def leave_one_group_out(rows: Sequence, fit: Callable[[list], Any],
                        predict: Callable[[Any, Any], float]) -> tuple[list[float], list[float]]:
    """(predictions, truths): for each group (sorted), ``fit`` on the other groups' rows and
    ``predict(model, row)`` its rows (``row.ms`` the truth)."""
    pred, true = [], []
    for g in sorted({r.group for r in rows}):
        model = fit([r for r in rows if r.group != g])
        for r in rows:
            if r.group == g:
                pred.append(predict(model, r))
                true.append(r.ms)
    return pred, true


# --------------------------------------------------------------------------------------------
# Table entries as regression rows
# --------------------------------------------------------------------------------------------
def table_rows(table, resolutions: Iterable[int | None] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(kinds, unscaled features, ms) of a table's entries (at the given resolutions: None = the
    resolution-free entries; all entries when not given)."""
    keep = None if resolutions is None else set(resolutions)
    kinds, X, y = [], [], []
    for res, key, e in table.items():
        if keep is None or res in keep:
            sig = table.sigs[key]
            kinds.append(sig.kind)
            X.append(layer_features(sig))
            y.append(e.ms)
    return kinds, (np.array(X) if X else np.zeros((0, len(FEATURES)))), np.array(y)
