"""Write docs/operators.md from the operator registries (run from the repository root).

    .venv/bin/python scripts/gen_operator_table.py
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from translator.mql.operator_table import render  # noqa: E402

if __name__ == "__main__":
    out = ROOT / "docs" / "operators.md"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")
