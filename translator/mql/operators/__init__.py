"""Operator families. Each module registers its operators with ``@operator`` on import."""

from translator.mql.operators import (  # noqa: F401
    accumulator_exprs,
    arithmetic,
    arrays,
    bits,
    boolean,
    comparison,
    conditional,
    date_parts,
    dates,
    javascript,
    misc,
    objects,
    regex,
    sets,
    sizes,
    string_bytes,
    strings,
    trig,
    types,
)
