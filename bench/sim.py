"""The simulator process of a benchmark: ``python -m bench.sim SPEC_JSON [ROUND_TRIP_S]``.

``SPEC_JSON`` is a list of ``[name, scripts]`` pairs. ``ROUND_TRIP_S`` (default 0): every
request of every PBX is answered that many seconds late (the simulator's ``delay`` fault), as
a PBX across a network would be; the wait costs the simulator no CPU. Once listening, the
process prints one JSON line ``{"base": "http://127.0.0.1:PORT"}`` on stdout and serves until
SIGTERM.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from auditor.simulator import Pbx, Simulator, run


def build(spec: Sequence[Sequence[Any]], round_trip: float = 0.0) -> Simulator:
    # Seeds differ per PBX so listings differ in shape, as in a real fleet.
    sim = Simulator(
        Pbx(str(name), scripts=int(scripts), seed=index + 1, history=0)
        for index, (name, scripts) in enumerate(spec)
    )
    if round_trip > 0:
        for pbx in sim:
            pbx.add_fault("delay", endpoint="any", seconds=round_trip)
    return sim


def main(argv: Sequence[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m bench.sim '[[name, scripts], ...]' [ROUND_TRIP_S]", file=sys.stderr)
        return 2
    sim = build(json.loads(argv[0]), float(argv[1]) if len(argv) == 2 else 0.0)

    def ready(base: str) -> None:
        print(json.dumps({"base": base}), flush=True)

    # No control API: nothing changes the PBXs during a benchmark.
    run(sim, "127.0.0.1", 0, control=False, ready=ready)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
