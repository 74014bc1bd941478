"""`make generate` (`python -m order_operator.generate --write`): the files written from the
operator's code, each checked by a unit test that fails when the file is stale.

- the OrderPipeline CRD (`v1alpha1/crd.py`) to the operator's `crd/` and the chart's `crds/`;
- the init containers' copy script (`builders.COPY_SOURCES_SCRIPT`, its one source) to the chart's
  `files/`: Helm reads only files inside the chart, so the chart carries a generated copy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from order_operator import builders
from order_operator.v1alpha1 import crd

_REPO = Path(__file__).resolve().parents[2]
COPY_SOURCES_TARGET = _REPO / "charts/order-pipeline/files/copy-sources.py"


def generated_files() -> dict[Path, str]:
    crd_text = crd.render()
    return {target: crd_text for target in crd.TARGETS} | {
        COPY_SOURCES_TARGET: builders.COPY_SOURCES_SCRIPT
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the files (else list them)")
    args = parser.parse_args()
    for target, text in generated_files().items():
        if args.write:
            target.write_text(text)
        print(f"{'wrote' if args.write else 'would write'} {target.relative_to(_REPO)}")


if __name__ == "__main__":
    main()
