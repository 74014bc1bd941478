"""Canary rollouts of the API and the processor, pure: decisions as data, no I/O.

    spec.py     what a rollout is asked to do (pydantic, CRD-ready)
    judge.py    a canary's verdict from numbers read from Prometheus
    shares.py   canary pods and receive concurrency for a weight
    machine.py  the per-component state machine, the clock passed in
    status.py   its status, the only memory between passes

The wiring (observe, act, handlers) reads revisions, metrics and commands, calls
`machine.advance_all` and carries the plans out.
"""
