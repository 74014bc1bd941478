"""The chart's copy of the operator's source-copy script, generated from `builders`.

Helm reads only files inside the chart, so the chart's operator Deployment cannot run
`builders.COPY_SOURCES_SCRIPT` from the operator package: `make generate`
(`python -m order_operator.chart_files --write`) writes it to the chart's `files/`, and a unit
test fails when that copy is stale. Edit the script in `builders`, never the chart's copy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from order_operator import builders

_REPO = Path(__file__).resolve().parents[2]
COPY_SOURCES_TARGET = _REPO / "charts/order-pipeline/files/copy-sources.py"


def render() -> str:
    return builders.COPY_SOURCES_SCRIPT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the chart's copy")
    args = parser.parse_args()
    text = render()
    if not args.write:
        print(text, end="")
        return
    COPY_SOURCES_TARGET.write_text(text)
    print(f"wrote {COPY_SOURCES_TARGET.relative_to(_REPO)}")


if __name__ == "__main__":
    main()
