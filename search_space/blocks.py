"""Block modules and the block-type registry.

A block class knows nothing of strings: it is built from a ``BlockSpec`` and registered under
its type name.  Each class also answers, without torch tensors, whether a spec is valid for it
(``check``) and what it costs (``cost``: parameters and multiply-accumulates at an input shape).
"""
from __future__ import annotations

from search_space.arch import BlockSpec
from search_space.errors import ArchError, field_error

BLOCKS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        BLOCKS[name] = cls
        cls.type_name = name
        return cls

    return deco


def check_block(spec: BlockSpec) -> None:
    cls = BLOCKS.get(spec.type)
    if cls is None:
        raise field_error(ArchError, "type", spec.type, sorted(BLOCKS))
    cls.check(spec)
