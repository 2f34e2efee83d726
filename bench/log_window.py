"""An earlier window of a sequential log, as a second file to calibrate on: every user's first
share of events, 5-core filtered again, written in the same `user item item ...` format.

    python -m bench.log_window --data Beauty.txt --share 0.7 --out BeautyEarly.txt

Without timestamps the window is per user (the first 70 % of each sequence): fewer users, items
and events, a different popularity and a different lifecycle than the whole log, the same shop.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sim import fit
from sim.structure import k_core


def window(seqs: list[np.ndarray], share: float) -> list[np.ndarray]:
    return k_core([s[: int(np.ceil(share * len(s)))] for s in seqs])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--share", type=float, default=0.7, help="share of each user's events kept, from the first")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not 0 < args.share <= 1:
        print(f"error: --share must be in (0, 1], got {args.share}", file=sys.stderr)
        return 2
    try:
        _, seqs, _ = fit.read_sequence_log(args.data)
    except fit.LogFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kept = window(seqs, args.share)
    if not kept:
        print(f"error: nothing of {args.data} survives 5-core filtering at share {args.share}", file=sys.stderr)
        return 2
    args.out.write_text("".join(" ".join(map(str, [u + 1, *(s + 1)])) + "\n" for u, s in enumerate(kept)))
    print(f"wrote {args.out}: {len(kept):,} users, {len(np.unique(np.concatenate(kept))):,} items, "
          f"{sum(map(len, kept)):,} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
