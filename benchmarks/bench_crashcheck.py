"""Crash-consistency of a shard's files, by crash-state enumeration (the longer run of
the check that ``make test`` runs on a bounded workload).

``isloader.store.crashcheck.run_check`` records a workload against a real shard
(concurrent writers, snapshots, epoch ends and prunes, writes failing as on a full disk
every ``--full-disk-every``-th write), builds every crash state the recording allows at
``--points`` crash points (only what was fsynced, everything written, and seeded random
prefixes of each file's and directory's pending operations), starts a shard on each and
checks that every acknowledged update is there and no update answered as failed is.
Several seeds give several interleavings.

Run: ``python benchmarks/bench_crashcheck.py [--seeds 3] [--points 80]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from tqdm import tqdm

from isloader.store.crashcheck import CrashReport, run_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--points", type=int, default=80)
    parser.add_argument("--per-point", type=int, default=6)
    parser.add_argument("--full-disk-every", type=int, default=29)
    args = parser.parse_args()
    # the full disks are on purpose: the shard's error line for each would flood the screen
    logging.getLogger("isloader.store.shard").setLevel(logging.CRITICAL)
    total = CrashReport()
    start = time.perf_counter()
    for seed in tqdm(range(args.seeds), desc="crash check", unit="workload"):
        report = run_check(
            size=args.size, writers=args.writers, rounds=args.rounds, points=args.points,
            per_point=args.per_point, full_disk_every=args.full_disk_every, seed=seed,
        )  # fmt: skip
        for name in ("operations", "crash_points", "crash_states_checked", "acknowledged",
                     "failed", "refused_to_start"):  # fmt: skip
            setattr(total, name, getattr(total, name) + getattr(report, name))
        total.violations += report.violations
    seconds = time.perf_counter() - start
    for violation in total.violations[:20]:
        print("violation:", violation)
    print(
        f"{total.crash_states_checked} crash states at {total.crash_points} crash points of "
        f"{args.seeds} workloads ({total.operations} recorded file calls, "
        f"{total.acknowledged} updates acknowledged, {total.failed} refused): "
        f"{len(total.violations)} violations, {total.refused_to_start} named refusals to start, "
        f"{seconds:.0f} s"
    )
    print(json.dumps({"seeds": args.seeds, "seconds": round(seconds, 1), **total.as_dict()}))


if __name__ == "__main__":
    main()
