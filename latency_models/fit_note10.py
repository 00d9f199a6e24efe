"""Make the ``note10-cpu`` target from the Once-for-All Samsung Galaxy Note10 tables.

    python -m latency_models.fit_note10 [--data ../shared/data] [--out latency_models/targets/note10-cpu.json]

Source: ``luts/ofa_note10_{160,176,192,208,224}.yaml`` of the OFA code (MobileNetV3 space, width
1.2: stem 24, stages 32/48/96/136/192, head 1152 -> 1536; expand = mid channels; SE and h-swish
flags).  Every operator becomes a table entry under our key, filed under its input resolution, so
an OFA-space network at 160..224 costs exactly the plain sum of its operators' entries, as in OFA.

Anything else (other widths, resolutions, block types) goes through a regressor fitted on those
entries.  Its error is measured two ways and stored in the target file:
  * layers: fitted on 160/176/208/224, judged on every 192 entry (a resolution it never saw);
  * networks: 200 random OFA-space networks at 192 (seed 0), predictor-only sum vs the exact table
    sum, with the regressor fitted without the 192 table.
The shipped regressor is then refitted on all five tables.
"""
from __future__ import annotations

import datetime as _dt
import random
import sys
from pathlib import Path

import numpy as np

from latency_models.features import layer_features
from latency_models.fitting import DATA, REPO, error_stats, table_rows
from latency_models.model import LatencyModel
from latency_models.predictor import fit_predictor
from latency_models.table import LatencyTable, import_ofa
from search_space.arch import Arch, BlockSpec, Head, Stem, make_divisible, signatures
from search_space.errors import OneLineParser, cli_entry

RESOLUTIONS = (160, 176, 192, 208, 224)
HELD_OUT_RES = 192

# The OFA MobileNetV3 w1.2 space the Note10 tables were measured on
OFA_STAGES = [  # (out_ch, first stride, act, se)
    (32, 2, "relu", False), (48, 2, "relu", True), (96, 2, "hswish", False),
    (136, 1, "hswish", True), (192, 2, "hswish", True),
]


def ofa_w12_arch(depths, kernels, expands) -> Arch:
    """An OFA MobileNetV3 (w1.2) subnet: ``depths`` per stage (2..4), ``kernels`` / ``expands``
    per block (3/5/7, 3/4/6) for the sum(depths) blocks."""
    blocks = [BlockSpec("mbconv", 24, 24, mid_ch=24, kernel=3, stride=1, act="relu", residual=True)]
    cin, i = 24, 0
    for (cout, stride, act, se), d in zip(OFA_STAGES, depths):
        for j in range(d):
            s = stride if j == 0 else 1
            mid = cin * expands[i]
            se_ch = make_divisible(mid // 4, 8) if se else 0
            blocks.append(BlockSpec("mbconv", cin, cout, mid_ch=mid, kernel=kernels[i], stride=s, se_ch=se_ch,
                                    se_gate="hsigmoid", act=act, residual=(s == 1 and cin == cout)))
            cin, i = cout, i + 1
    return Arch(Stem(24, 3, 2, "hswish"), tuple(blocks), Head(last_ch=1152, hidden_ch=1536, act="hswish", hidden_bias=False))


def random_ofa_arch(rng: random.Random) -> Arch:
    depths = [rng.choice((2, 3, 4)) for _ in OFA_STAGES]
    n = sum(depths)
    return ofa_w12_arch(depths, [rng.choice((3, 5, 7)) for _ in range(n)], [rng.choice((3, 4, 6)) for _ in range(n)])


def ofa_keys(arch: Arch, resolution: int) -> list[str]:
    """The OFA project's own operator keys of an OFA w1.2 arch (independent of our importer: for
    the exact-sum check)."""
    keys = []
    h = resolution
    ho = (h + 1) // 2
    keys.append(f"Conv-input:{h}x{h}x3-output:{ho}x{ho}x{arch.stem.out_ch}")
    h = ho
    for b in arch.blocks:
        ho = (h + 1) // 2 if b.stride == 2 else h
        keys.append(f"expanded_conv-input:{h}x{h}x{b.in_ch}-output:{ho}x{ho}x{b.out_ch}-expand:{b.mid_ch}"
                    f"-kernel:{b.kernel}-stride:{b.stride}-idskip:{int(b.residual)}-se:{int(b.se_ch > 0)}"
                    f"-hs:{int(b.act == 'hswish')}")
        h = ho
    last, hid = arch.head.last_ch, arch.head.hidden_ch
    keys += [f"Conv_1-input:{h}x{h}x{arch.out_ch}-output:{h}x{h}x{last}",
             f"AvgPool2D-input:{h}x{h}x{last}-output:1x1x{last}",
             f"Conv_2-input:1x1x{last}-output:1x1x{hid}", f"Logits-input:1x1x{hid}-output:1000"]
    return keys


def network_error(table: LatencyTable, predictor, res: int, n: int = 200, seed: int = 0) -> dict:
    rng = random.Random(seed)
    archs = [random_ofa_arch(rng) for _ in range(n)]
    exact, pred = [], []
    for a in archs:
        sigs = signatures(a, res)
        exact.append(sum(table.get(s.key, res).ms for s in sigs))
        X = np.stack([layer_features(s) for s in sigs])
        pred.append(float(predictor.predict_rows([s.kind for s in sigs], X).sum()))
    exact, pred = np.array(exact), np.array(pred)
    return error_stats(pred, exact)


def build(data: Path) -> tuple[LatencyModel, dict]:
    paths = [data / "luts" / f"ofa_note10_{r}.yaml" for r in RESOLUTIONS]
    table = import_ofa(paths)
    train_res = [r for r in RESOLUTIONS if r != HELD_OUT_RES]
    k, X, y = table_rows(table, train_res)
    held = fit_predictor(k, X, y, own_kinds=("mbconv",))
    kh, Xh, yh = table_rows(table, [HELD_OUT_RES])
    layer_err = error_stats(held.predict_rows(kh, Xh), yh)
    net_err = network_error(table, held, HELD_OUT_RES)
    k, X, y = table_rows(table, RESOLUTIONS)
    predictor = fit_predictor(k, X, y, own_kinds=("mbconv",),
                              fitted_on={"table_entries": len(y), "resolutions": list(RESOLUTIONS)})
    error = {
        "held_out": f"regressor fitted without the {HELD_OUT_RES} table, judged on it",
        "layers_at_held_out_resolution": layer_err,
        "networks_predictor_only_200_random_ofa_at_192": net_err,
        "table_lookups": "exact (OFA-space networks at 160..224 cost the plain sum of their entries)",
    }
    meta = {
        "device": "Samsung Galaxy Note10 CPU (as measured by the OFA authors)",
        "runtime": "as in the OFA code's latency tables (TFLite, fp32)",
        "threads": None, "resolutions": list(RESOLUTIONS),
        "date": _dt.date.today().isoformat(), "repeats": "count per entry (about 50-500)",
        "made_by": "python -m latency_models.fit_note10",
        "made_from": [f"../shared/data/luts/{p.name}" for p in paths],
        "notes": "OFA MobileNetV3 w1.2 space; keys mapped with the OFA conventions (expand = mid channels, "
                 "SE = make_divisible(mid // 4, 8) with h-sigmoid gate, hs flag = h-swish else ReLU, stem and "
                 "head h-swish, Conv_2 without bias); head = Conv_1 + AvgPool2D + Conv_2 + Logits",
    }
    return LatencyModel("note10-cpu", table, predictor, meta, error), error


@cli_entry
def main(argv=None) -> int:
    ap = OneLineParser(prog="python -m latency_models.fit_note10",
                       description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(REPO / "latency_models" / "targets" / "note10-cpu.json"))
    args = ap.parse_args(argv)
    model, error = build(Path(args.data))
    print(f"note10-cpu: {len(model.table)} table entries")
    for name, e in error.items():
        print(f"  {name}: {e}")
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
