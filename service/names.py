"""Processor names are data: the rules a name must meet at create time.

A name never becomes part of a filesystem path (on-disk folders are keyed by the
processor's generated id, see ``Supervisor.processor_dir``), so ``"/some/dir"``,
``".."`` or ``"a/b"`` are ordinary names. What is rejected are names that cannot be
shown, logged or passed to a child process intact: empty ones, NUL and other
control characters, and names longer than :data:`MAX_NAME_BYTES` bytes of UTF-8.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from service.errors import FAILED_TO_PARSE, CommandError

MAX_NAME_BYTES = 255  # like a MongoDB namespace or a file-name component
RESERVED_PREFIX = "__process_"  # sp.process's temporary processors


def check_processor_name(name: Any) -> str:
    """Return ``name`` if it is acceptable, else raise a ``FailedToParse`` error."""
    if not isinstance(name, str):
        raise CommandError(
            FAILED_TO_PARSE, f"processor name must be a string, got {type(name).__name__}"
        )
    if not name.strip():
        raise CommandError(FAILED_TO_PARSE, "processor name must not be empty")
    if "\x00" in name:
        raise CommandError(FAILED_TO_PARSE, "processor name must not contain a NUL character")
    for i, ch in enumerate(name):
        if unicodedata.category(ch) == "Cc":
            raise CommandError(
                FAILED_TO_PARSE,
                f"processor name must not contain control characters "
                f"(U+{ord(ch):04X} at position {i})",
            )
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise CommandError(
            FAILED_TO_PARSE,
            f"processor name is {size} bytes long; at most {MAX_NAME_BYTES} bytes of UTF-8 "
            "are allowed",
        )
    if name.startswith(RESERVED_PREFIX):
        raise CommandError(
            FAILED_TO_PARSE,
            f"processor names starting with '{RESERVED_PREFIX}' are reserved for sp.process",
        )
    return name


__all__ = ["MAX_NAME_BYTES", "RESERVED_PREFIX", "check_processor_name"]
