"""`python -m tests.chaos [--seconds 600] [--fault-every 10] [--seed N] [--keep DIR]`
(`make chaos`): the long run of the chaos harness; prints its table and exits 1 when anything
was lost, duplicated or stuck."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from tests.chaos.harness import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to inject faults")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds between faults")
    parser.add_argument("--meetings", type=int, default=15, help="meetings per mailbox")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="run in this directory and keep it: the services' logs (var/log) and every span "
        "(spans.jsonl), to read what happened",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="concord-chaos-")))
        else:
            tmp = args.keep
            tmp.mkdir(parents=True, exist_ok=True)
        outcome = run(
            tmp,
            seconds=args.seconds,
            fault_every=args.fault_every,
            per_pair=args.meetings,
            seed=args.seed,
            keep_spans=args.keep is not None,
        )
    print(outcome.table())
    return 1 if outcome.lost or outcome.duplicated or outcome.stuck else 0


if __name__ == "__main__":
    raise SystemExit(main())
