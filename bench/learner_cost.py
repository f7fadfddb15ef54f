"""Instructions per message of ``FeedbackLearner.process``: a load-independent cost measure.

Wall-clock rates on a shared machine swing by tens of percent; instruction counts under
callgrind do not. Run twice, with and without processing, and subtract::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/learner_cost.py --events 20000 --setup-only
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/learner_cost.py --events 20000

(``Collected`` in each run's output; the difference divided by the messages is the cost per
message.) ``--batch N`` feeds ``FeedbackLearner.process_batch`` N messages at a time (the
consumer's entry point) instead of ``process`` one by one. ``PYTHONHASHSEED=0`` fixes
string hashing, so repeated runs count the same.
Both runs load the compiled kernels (:func:`stream.models.kernels.warm_up`), so loading
them, a once-per-process cost, is not counted as per-message work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import Settings  # noqa: E402
from stream.events import encode_event  # noqa: E402
from stream.learner import FeedbackLearner  # noqa: E402
from stream.models.kernels import warm_up  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--setup-only", action="store_true", help="Build everything, process nothing.")
    ap.add_argument(
        "--batch", type=int, default=0, help="Messages per process_batch call (0: process each)."
    )
    args = ap.parse_args()
    sim = Simulator(SimulatorConfig(seed=args.seed, bot_share=0.02))
    events = [*sim.profiles(), *sim.events(args.events)]
    raws: list[bytes | None] = [encode_event(e) for e in events]
    learner = FeedbackLearner(Settings())
    warm_up()
    if not args.setup_only and args.batch > 0:
        for start in range(0, len(raws), args.batch):
            learner.process_batch(raws[start : start + args.batch])
    elif not args.setup_only:
        process = learner.process
        for raw in raws:
            process(raw)
    print(f"{len(raws)} messages{' (not processed)' if args.setup_only else ''}")


if __name__ == "__main__":
    main()
