"""The simulator process of a benchmark: ``python -m bench.sim SPEC_JSON``.

``SPEC_JSON`` is a list of ``[name, scripts]`` pairs. Once listening, the process prints one
JSON line ``{"base": "http://127.0.0.1:PORT"}`` on stdout and serves until SIGTERM.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from auditor.simulator import Pbx, Simulator, run


def build(spec: Sequence[Sequence[Any]]) -> Simulator:
    # Seeds differ per PBX so listings differ in shape, as in a real fleet.
    return Simulator(
        Pbx(str(name), scripts=int(scripts), seed=index + 1, history=0)
        for index, (name, scripts) in enumerate(spec)
    )


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.sim '[[name, scripts], ...]'", file=sys.stderr)
        return 2
    sim = build(json.loads(argv[0]))

    def ready(base: str) -> None:
        print(json.dumps({"base": base}), flush=True)

    # No control API: nothing changes the PBXs during a benchmark.
    run(sim, "127.0.0.1", 0, control=False, ready=ready)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
