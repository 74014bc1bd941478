"""`python -m order_devtools.images`: build what is out of date, then print each image's
reference and archive (`ctr -n k8s.io images import <archive>` loads it under that reference)."""

from __future__ import annotations

import sys

from order_devtools.images import ImageBuildError, ensure_images


def main() -> int:
    try:
        built = ensure_images()
    except ImageBuildError as exc:
        print(f"make images: {exc}", file=sys.stderr)
        return 1
    width = max(len(name) for name in built)
    for name, image in built.items():
        print(f"{name:<{width}}  {image.reference}\n{'':<{width}}  {image.archive}")
    return 0
