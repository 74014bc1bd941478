"""Developer tooling: local engines, local run, test control plane."""
