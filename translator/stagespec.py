"""Typed shapes of compiled map stages that the optimizers read.

:mod:`translator.stages` builds them next to each stage's reference closure; the fused
``$addFields`` + ``$project`` closure (``stages._fuse_add_include``) and the generated
code (:mod:`translator.codegen`) read them. They describe the stage; they never run it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from translator.mql.expr import Expr

# IncludeField.kind: how an inclusion $project computes one output field.
COPY = 0  # ``a`` is the input field's name (``{a: 1}``, or ``{b: "$a"}``)
PATH2 = 1  # ``b`` is a two-part field path, ``a`` its compiled expression (for arrays)
COMPUTE = 2  # ``a`` is any other compiled expression


class AddSpec(NamedTuple):
    """``$addFields``/``$set`` of top-level fields: (name, expression) in spec order."""

    fields: tuple[tuple[str, Expr], ...]


class IncludeField(NamedTuple):
    key: str  # output field
    kind: int  # COPY, PATH2 or COMPUTE
    a: Any
    b: Any  # tuple[str, ...] for PATH2, else None


class IncludeSpec(NamedTuple):
    """Inclusion ``$project`` of top-level fields and short paths; ``with_id``: copy ``_id`` first."""

    fields: tuple[IncludeField, ...]
    with_id: bool


MapSpec = AddSpec | IncludeSpec
