"""The error every part of the local control plane raises."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached; the message says why."""
