"""Import architectures described by other NAS projects into an ``Arch``.

Supported: the ``net.config`` JSON of Once-for-All (``MobileNetV3`` subnets) and ProxylessNAS
(``ProxylessNASNets``), as written by MIT Han Lab's public code.  Both describe

    first_conv (ConvLayer) -> blocks (MobileInvertedResidualBlock / ResidualBlock) ->
    [final_expand_layer] -> global pool -> [feature_mix_layer] -> classifier (LinearLayer)

and map onto our ``Stem`` + ``mbconv`` blocks + ``Head``:

* ``MBInvertedConvLayer`` / ``MBConvLayer``: mid channels = ``mid_channels`` if given, else
  ``make_divisible(round(in * expand_ratio), 8)``; ``expand_ratio == 1`` means no expansion conv
  (our ``mid_ch == in_ch``).  ``use_se`` adds OFA's SE: ``make_divisible(mid // 4, 8)``
  bottleneck channels, ReLU, hard-sigmoid gate.  ``act_func`` defaults to ReLU6 (ProxylessNAS).
* ``ZeroLayer`` blocks (skipped layers) with an identity shortcut are dropped.
* ProxylessNAS: ``feature_mix_layer`` is a 1x1 conv + BN + act before pooling -> ``Head.last_ch``.
* OFA MobileNetV3: ``final_expand_layer`` (1x1 conv + BN + act) -> ``Head.last_ch``;
  ``feature_mix_layer`` (1x1 conv, no BN, no bias, act, after pooling) -> ``Head.hidden_ch``.

Anything else (an unknown layer name or field, or a value our Arch cannot express) raises an
``ArchError`` naming the JSON path.

CLI::

    python -m search_space.importers FILE [--out arch.yaml] [--resolution R]
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_space.arch import Arch, BlockSpec, Head, Stem, make_divisible
from search_space.errors import ArchError, OneLineParser, cli_entry, field_error

# Activation names of the OFA / ProxylessNAS code -> ours.
_ACTS = {"relu": "relu", "relu6": "relu6", "h_swish": "hswish"}
_NETS = ("MobileNetV3", "ProxylessNASNets")
_CONV_KEYS = {"name", "kernel_size", "stride", "dilation", "groups", "bias", "has_shuffle", "in_channels",
              "out_channels", "use_bn", "act_func", "dropout_rate", "ops_order"}
_LINEAR_KEYS = {"name", "in_features", "out_features", "bias", "use_bn", "act_func", "dropout_rate", "ops_order"}
_MB_KEYS = {"name", "in_channels", "out_channels", "kernel_size", "stride", "expand_ratio", "mid_channels",
            "act_func", "use_se", "groups"}
_IDENTITY_KEYS = {"name", "in_channels", "out_channels", "use_bn", "act_func", "dropout_rate", "ops_order"}
_BLOCK_NAMES = {"MobileInvertedResidualBlock": "mobile_inverted_conv", "ResidualBlock": "conv"}
_MB_NAMES = ("MBInvertedConvLayer", "MBConvLayer")
SE_REDUCTION = 4  # OFA's SEModule.REDUCTION


@dataclass(frozen=True)
class NetConfig:
    """What a net.config holds besides the Arch: the classifier size and the input resolution."""

    arch: Arch
    name: str
    num_classes: int
    resolution: int | None  # from a sibling .run.config (OFA), if there is one
    source: str


# --------------------------------------------------------------------------------------------
# Small checked readers: every failure names the JSON path
# --------------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, where: str):
        self.where = where

    def err(self, path: str, got: Any, allowed: Any) -> ArchError:
        return field_error(ArchError, f"{self.where}: {path}", got, allowed)

    def mapping(self, d: Any, path: str) -> dict:
        if not isinstance(d, dict):
            raise self.err(path, type(d).__name__, "a JSON object")
        return d

    def keys(self, d: dict, path: str, known: set[str], required: tuple[str, ...] = ()) -> None:
        for k in d:
            if k not in known:
                raise self.err(f"{path}.{k}", k, sorted(known))
        for k in required:
            if k not in d:
                raise ArchError(f"{self.where}: {path}.{k}: missing; required: {', '.join(required)}")

    def int(self, d: dict, key: str, path: str, default: int | None = None) -> int:
        v = d.get(key, default)
        if isinstance(v, list) and len(v) == 1:  # OFA writes IdentityLayer channels as [16]
            v = v[0]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise self.err(f"{path}.{key}", v, "a positive integer")
        return v

    def value(self, d: dict, key: str, path: str, allowed: tuple, default: Any = None) -> Any:
        v = d.get(key, default)
        if v not in allowed:
            raise self.err(f"{path}.{key}", v, [a for a in allowed])
        return v

    def act(self, d: dict, path: str, default: str | None = None) -> str:
        v = d.get("act_func", default)
        if v not in _ACTS:
            raise self.err(f"{path}.act_func", v, sorted(_ACTS))
        return _ACTS[v]

    def conv_layer(self, d: Any, path: str, kernel: int | None = None, use_bn: bool = True) -> dict:
        """A ConvLayer: weight -> BN -> act, no bias, no dilation/groups/shuffle/dropout."""
        d = self.mapping(d, path)
        self.keys(d, path, _CONV_KEYS, ("name", "in_channels", "out_channels"))
        self.value(d, "name", path, ("ConvLayer",))
        if kernel is not None:
            self.value(d, "kernel_size", path, (kernel,), kernel)
        self.value(d, "dilation", path, (1,), 1)
        self.value(d, "groups", path, (1,), 1)
        self.value(d, "bias", path, (False,), False)
        self.value(d, "has_shuffle", path, (False,), False)
        self.value(d, "use_bn", path, (use_bn,), use_bn)
        self.value(d, "dropout_rate", path, (0, 0.0), 0)
        self.value(d, "ops_order", path, ("weight_bn_act",), "weight_bn_act")
        return d


def _mbconv(r: _Reader, conv: dict, path: str, residual: bool, prev: int) -> BlockSpec:
    r.keys(conv, path, _MB_KEYS, ("in_channels", "out_channels", "kernel_size", "stride", "expand_ratio"))
    in_ch = r.int(conv, "in_channels", path)
    if in_ch != prev:
        raise r.err(f"{path}.in_channels", in_ch, [prev])
    out_ch = r.int(conv, "out_channels", path)
    kernel = r.int(conv, "kernel_size", path)
    stride = r.value(conv, "stride", path, (1, 2))
    if conv.get("groups") not in (None, 1):
        raise r.err(f"{path}.groups", conv.get("groups"), [None, 1])
    expand = conv["expand_ratio"]
    if not isinstance(expand, (int, float)) or isinstance(expand, bool) or expand <= 0:
        raise r.err(f"{path}.expand_ratio", expand, "a positive number")
    mid = conv.get("mid_channels")
    if expand == 1:
        if mid not in (None, in_ch):
            raise r.err(f"{path}.mid_channels", mid, [None, in_ch])
        mid = in_ch  # no expansion conv
    elif mid is None:
        mid = make_divisible(round(in_ch * expand), 8)
    else:
        mid = r.int(conv, "mid_channels", path)
        if mid == in_ch:
            raise ArchError(f"{r.where}: {path}.mid_channels: {mid} equals in_channels with expand_ratio "
                            f"{expand}; allowed: an expanded width != {in_ch} (ours reads mid == in as 'no expansion')")
    act = r.act(conv, path, "relu6")
    use_se = r.value(conv, "use_se", path, (False, True), False)
    se_ch = make_divisible(mid // SE_REDUCTION, 8) if use_se else 0
    try:
        return BlockSpec("mbconv", in_ch, out_ch, mid_ch=mid, kernel=kernel, stride=stride, se_ch=se_ch,
                         se_gate="hsigmoid", act=act, residual=residual)
    except ArchError as exc:
        raise ArchError(f"{r.where}: {path}: {exc}") from None


def _shortcut(r: _Reader, sc: Any, path: str) -> bool:
    if sc is None:
        return False
    sc = r.mapping(sc, path)
    r.keys(sc, path, _IDENTITY_KEYS, ("name",))
    r.value(sc, "name", path, ("IdentityLayer",))
    r.value(sc, "use_bn", path, (False,), False)
    r.value(sc, "act_func", path, (None,), None)
    r.value(sc, "dropout_rate", path, (0, 0.0), 0)
    return True


def arch_from_net_config(cfg: Any, where: str = "net.config") -> tuple[Arch, int]:
    """Map a parsed net.config to ``(Arch, num_classes)``; ``where`` prefixes error messages."""
    r = _Reader(where)
    cfg = r.mapping(cfg, "(top)")
    net = r.value(cfg, "name", "(top)", _NETS)
    top_keys = {"name", "bn", "first_conv", "blocks", "feature_mix_layer", "classifier"}
    if net == "MobileNetV3":
        top_keys.add("final_expand_layer")
    r.keys(cfg, "(top)", top_keys, tuple(sorted(top_keys - {"bn"})))
    if "bn" in cfg:
        r.keys(r.mapping(cfg["bn"], "bn"), "bn", {"momentum", "eps"})

    fc = r.conv_layer(cfg["first_conv"], "first_conv")
    try:
        stem = Stem(out_ch=r.int(fc, "out_channels", "first_conv"), kernel=r.int(fc, "kernel_size", "first_conv"),
                    stride=r.value(fc, "stride", "first_conv", (1, 2)), act=r.act(fc, "first_conv"),
                    in_ch=r.int(fc, "in_channels", "first_conv"))
    except ArchError as exc:
        raise ArchError(f"{where}: first_conv: {exc}") from None

    raw_blocks = cfg["blocks"]
    if not isinstance(raw_blocks, list) or not raw_blocks:
        raise r.err("blocks", type(raw_blocks).__name__, "a non-empty list of blocks")
    blocks: list[BlockSpec] = []
    prev = stem.out_ch
    for i, b in enumerate(raw_blocks):
        path = f"blocks[{i}]"
        b = r.mapping(b, path)
        bname = r.value(b, "name", path, tuple(_BLOCK_NAMES))
        conv_key = _BLOCK_NAMES[bname]
        r.keys(b, path, {"name", conv_key, "shortcut"}, (conv_key,))
        residual = _shortcut(r, b.get("shortcut"), f"{path}.shortcut")
        cpath = f"{path}.{conv_key}"
        conv = r.mapping(b[conv_key], cpath)
        cname = r.value(conv, "name", cpath, (*_MB_NAMES, "ZeroLayer"))
        if cname == "ZeroLayer":
            r.keys(conv, cpath, {"name", "stride"})
            if not residual:
                raise ArchError(f"{where}: {cpath}: a ZeroLayer without an identity shortcut zeroes the "
                                "network; allowed: ZeroLayer with an IdentityLayer shortcut")
            r.value(conv, "stride", cpath, (1,), 1)
            continue  # identity: the layer was searched away
        spec = _mbconv(r, conv, cpath, residual, prev)
        blocks.append(spec)
        prev = spec.out_ch
    if not blocks:
        raise r.err("blocks", "only ZeroLayer blocks", "at least one MBInvertedConvLayer")

    last_ch = hidden_ch = 0
    if net == "MobileNetV3":
        fe = r.conv_layer(cfg["final_expand_layer"], "final_expand_layer", kernel=1)
        if r.int(fe, "in_channels", "final_expand_layer") != prev:
            raise r.err("final_expand_layer.in_channels", fe["in_channels"], [prev])
        last_ch = r.int(fe, "out_channels", "final_expand_layer")
        head_act = r.act(fe, "final_expand_layer")
        fm = r.conv_layer(cfg["feature_mix_layer"], "feature_mix_layer", kernel=1, use_bn=False)
        if r.int(fm, "in_channels", "feature_mix_layer") != last_ch:
            raise r.err("feature_mix_layer.in_channels", fm["in_channels"], [last_ch])
        hidden_ch = r.int(fm, "out_channels", "feature_mix_layer")
        r.value(fm, "act_func", "feature_mix_layer", tuple(a for a, ours in _ACTS.items() if ours == head_act))
    else:
        fm = r.conv_layer(cfg["feature_mix_layer"], "feature_mix_layer", kernel=1)
        if r.int(fm, "in_channels", "feature_mix_layer") != prev:
            raise r.err("feature_mix_layer.in_channels", fm["in_channels"], [prev])
        last_ch = r.int(fm, "out_channels", "feature_mix_layer")
        head_act = r.act(fm, "feature_mix_layer")

    cl = r.mapping(cfg["classifier"], "classifier")
    r.keys(cl, "classifier", _LINEAR_KEYS, ("name", "in_features", "out_features"))
    r.value(cl, "name", "classifier", ("LinearLayer",))
    r.value(cl, "bias", "classifier", (True,), True)
    r.value(cl, "use_bn", "classifier", (False,), False)
    r.value(cl, "act_func", "classifier", (None,), None)
    r.value(cl, "ops_order", "classifier", ("weight_bn_act",), "weight_bn_act")
    features = hidden_ch or last_ch or prev
    if r.int(cl, "in_features", "classifier") != features:
        raise r.err("classifier.in_features", cl["in_features"], [features])
    num_classes = r.int(cl, "out_features", "classifier")
    dropout = cl.get("dropout_rate", 0)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise r.err("classifier.dropout_rate", dropout, "a number in [0, 1)")

    head_kw: dict[str, Any] = dict(last_ch=last_ch, hidden_ch=hidden_ch, act=head_act, dropout=float(dropout))
    if hidden_ch:
        head_kw["hidden_bias"] = False  # OFA's feature_mix_layer is a ConvLayer: no bias
    try:
        arch = Arch(stem, tuple(blocks), Head(**head_kw))
    except ArchError as exc:
        raise ArchError(f"{where}: {exc}") from None
    return arch, num_classes


def read_net_config(path: str | Path) -> NetConfig:
    """Read an OFA / ProxylessNAS ``net.config`` file (and a sibling ``.run.config``, if any)."""
    p = Path(path)
    if not p.is_file():
        raise ArchError(f"net config: {p} does not exist")
    try:
        cfg = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArchError(f"{p}: malformed JSON: {exc}") from None
    arch, num_classes = arch_from_net_config(cfg, where=str(p))
    resolution = None
    run = p.with_name(p.name.replace(".net.config", ".run.config"))
    if run != p and run.is_file():
        try:
            size = json.loads(run.read_text()).get("image_size")
        except (json.JSONDecodeError, AttributeError):
            size = None
        if isinstance(size, int) and size > 0:
            resolution = size
    name = p.name.removesuffix(".config").removesuffix(".net")
    return NetConfig(arch=arch, name=name, num_classes=num_classes, resolution=resolution, source=cfg["name"])


def from_net_config(path: str | Path) -> Arch:
    """The ``Arch`` of an OFA / ProxylessNAS ``net.config`` JSON file."""
    return read_net_config(path).arch


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
@cli_entry
def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog="python -m search_space.importers",
                                 description="Import an OFA / ProxylessNAS net.config as an edgenas Arch.")
    ap.add_argument("file", help="net.config JSON (OFA *.net.config, ProxylessNAS *.config)")
    ap.add_argument("--out", help="write the Arch here (.yaml/.yml, or .json)")
    ap.add_argument("--resolution", type=int, default=None,
                    help="input resolution for MACs (default: the .run.config's image_size, else 224)")
    args = ap.parse_args(argv)
    if args.resolution is not None and args.resolution <= 0:
        raise field_error(ArchError, "--resolution", args.resolution, "a positive integer")
    from search_space.profile import profile

    nc = read_net_config(args.file)
    res = args.resolution or nc.resolution or 224
    cost = profile(nc.arch, resolution=res, num_classes=nc.num_classes)
    print(f"name: {nc.name} ({nc.source})")
    print(f"params: {cost['params']:,}  ({nc.num_classes} classes)")
    print(f"MACs: {cost['macs'] / 1e6:.1f}M at {res}x{res}")
    print(f"arch: {nc.arch.to_string()}")
    if args.out:
        out = Path(args.out)
        if out.suffix not in (".yaml", ".yml", ".json"):
            raise field_error(ArchError, "--out", str(out), "a .yaml, .yml or .json path")
        out.parent.mkdir(parents=True, exist_ok=True)
        nc.arch.save(out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
