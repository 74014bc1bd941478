"""Canary rollouts, pure: the spec, the judge, the share arithmetic and the state machine."""
