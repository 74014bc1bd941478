"""Compare two source trees, interleaved on one set of engines.

    .venv/bin/python -m tests.bench.compare A=/path/to/tree B=/path/to/other-tree
    .venv/bin/python -m tests.bench.compare --end-to-end --rates 800,1000 A=... B=...

Each tree (a checkout, e.g. a `git worktree` of another commit) serves its own API process on
the same engines (with `--end-to-end`, its API and processor on fresh queues and tables each
step); fixed-rate steps alternate between them, in both orders, so the machine's drift affects
both alike. Prints one JSON line per step. Written for decisions such as "does this fast path
earn its place"; `make bench` stays the reported run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from order_devtools import engines, local
from tests.bench import loadgen
from tests.bench import run as bench
from tests.bench.cpu import CpuMeter


def _tree(argument: str) -> tuple[str, Path]:
    name, _, path = argument.partition("=")
    tree = Path(path).resolve()
    if not name or not (tree / "services/order_api").is_dir():
        raise argparse.ArgumentTypeError(f"expected NAME=/path/to/a/checkout, got {argument!r}")
    return name, tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trees", nargs=2, type=_tree, metavar="NAME=TREE")
    parser.add_argument("--rates", default="1000,2000,3000", help="offered rates per step")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each step")
    parser.add_argument(
        "--end-to-end", action="store_true", help="API and processor, not the accept path alone"
    )
    args = parser.parse_args()
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    vegeta = loadgen.ensure_vegeta()
    engines.ensure_installed()
    with (
        tempfile.TemporaryDirectory() as scratch,
        engines.running_engines(Path(scratch) / "engines", persistent=False) as running,
    ):
        work = Path(scratch)
        if args.end_to_end:
            _compare_end_to_end(args, running, vegeta, work)
            return
        apis = {name: _start_api(running, name, tree, work) for name, tree in args.trees}
        try:
            (first, second) = apis
            for name in apis:  # warm-up, not reported
                _step(apis[name], vegeta, work, rate=1000, seconds=5)
            for rate in (int(r) for r in args.rates.split(",")):
                for order in ((first, second), (second, first)):
                    for name in order:
                        row = _step(apis[name], vegeta, work, rate=rate, seconds=args.seconds)
                        print(json.dumps({"tree": name, **row}), flush=True)
        finally:
            for api in apis.values():
                api["process"].stop()


def _python_path(tree: Path) -> str:
    return os.pathsep.join(str(tree / d) for d in ("services", "tools", "operator", ""))


def _compare_end_to_end(
    args: argparse.Namespace, running: engines.Engines, vegeta: Path, work: Path
) -> None:
    engine_pids = {"elasticmq": running.sqs.pid or 0, "dynoxide": running.dynamodb.pid or 0}
    steps = itertools.count()

    def step(name: str, tree: Path, rate: int, seconds: float) -> dict[str, Any]:
        env = {"PYTHONPATH": _python_path(tree), "LOG_LEVEL": "WARNING"}
        return bench.end_to_end_step(
            running,
            vegeta,
            work,
            name=f"compare-{name}-{rate}-{next(steps)}",
            rate=rate,
            seconds=seconds,
            api_env={**env, "RATE_LIMIT_PER_MINUTE": "1000000000"},
            processor_env=env,
            engine_pids=engine_pids,
        )

    for name, tree in args.trees:  # warm-up, not reported: the engines' JIT, the caches
        step(name, tree, 400, 5)
    for rate in (int(r) for r in args.rates.split(",")):
        for order in (args.trees, args.trees[::-1]):
            for name, tree in order:
                row = step(name, tree, rate, args.seconds)
                print(json.dumps({"tree": name, **row}), flush=True)


def _start_api(running: engines.Engines, name: str, tree: Path, work: Path) -> dict[str, Any]:
    pipeline = bench._pipeline(running, f"compare-{name}")
    port = local.free_port()
    process = local.api_process(
        pipeline,
        port,
        work / f"logs-{name}",
        PYTHONPATH=_python_path(tree),
        RATE_LIMIT_PER_MINUTE="1000000000",
        LOG_LEVEL="WARNING",
    )
    process.start()
    base = f"http://127.0.0.1:{port}"
    targets = bench.order_targets(base, work / f"targets-{name}.json")
    assert process.process is not None
    return {
        "process": process,
        "pipeline": pipeline,
        "base": base,
        "targets": targets,
        "meter": CpuMeter({"api": process.process.pid}),
    }


def _step(
    api: dict[str, Any], vegeta: Path, work: Path, *, rate: int, seconds: float
) -> dict[str, Any]:
    bench._wait_idle(api["base"], timeout=20)
    bench._purge(api["pipeline"])
    cpu: dict[str, float] = {}
    with api["meter"].measure(cpu):
        attack = loadgen.attack(vegeta, api["targets"], rate=rate, seconds=seconds, workdir=work)
    return {
        "rate": rate,
        "throughput": round(attack.throughput),
        "p50_ms": round(attack.p50_ms, 1),
        "p99_ms": round(attack.p99_ms, 1),
        "api_cores": cpu["api"],
        "api_ms_per_request": round(1000 * cpu["api"] / max(1.0, attack.throughput), 3),
    }


if __name__ == "__main__":
    main()
