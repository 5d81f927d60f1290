"""Operator families. Each module registers its operators with ``@operator`` on import."""

from translator.mql.operators import (  # noqa: F401
    arithmetic,
    arrays,
    boolean,
    comparison,
    conditional,
    dates,
    misc,
    objects,
    strings,
    types,
)
