"""edgenas search space: the Arch value, blocks, named networks (zoo), spaces, import/export.

Public API (imported lazily so that ``import search_space`` stays light):
    Arch, BlockSpec, Stem, Head, signatures, make_divisible   -- search_space.arch
    profile(arch, resolution=224, num_classes=1000)          -- search_space.profile
    zoo                                                        -- search_space.zoo
    load_space(name_or_path) -> Space                          -- search_space.space
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Arch": "search_space.arch", "BlockSpec": "search_space.arch", "Stem": "search_space.arch",
    "Head": "search_space.arch", "Signature": "search_space.arch", "signatures": "search_space.arch",
    "make_divisible": "search_space.arch", "parse_arch_string": "search_space.arch",
    "profile": "search_space.profile", "load_space": "search_space.space", "Space": "search_space.space",
    "space_names": "search_space.space",
}
_SUBMODULES = {"zoo", "space", "blocks", "modules", "builder", "importers", "export", "errors", "arch"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"search_space.{name}")
    raise AttributeError(f"module 'search_space' has no attribute {name!r}")
