"""CPU cost of parsing the known quadratic header shapes (docs/security.md, issue 19).

Each shape from tests/security/test_parse_isolation.py is built at several sizes of its one
hostile field and handed to `bridge.mail.build_message_data`; the table gives CPU seconds.
`--uncapped` switches the cheap caps off (bridge/mail/_limits.py), which shows what the
stdlib parser alone costs: minutes at a few MB, so keep the sizes small with it.

    python bench/parse_cost.py --sizes 125,250
    python bench/parse_cost.py --uncapped --sizes 125,250,500,1000,2000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge import mail
from tests.security.test_parse_isolation import SHAPES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="125,250,500,1000,2000", help="KB, comma-separated")
    ap.add_argument("--uncapped", action="store_true", help="switch the cheap caps off")
    ap.add_argument("--max-seconds", type=float, default=12.0, help="stop a shape past this")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    caps = mock.patch("bridge.mail._payload.over_limits", return_value=None)
    if args.uncapped:
        caps.start()
    print(f"{'shape':34}" + "".join(f"{s:>9} KB" for s in sizes))
    for name, make in SHAPES.items():
        cells: list[str] = []
        for kb in sizes:
            raw = make(kb * 1000)
            started = time.process_time()
            mail.build_message_data(raw, attachment_inline_limit=1 << 20, include_raw=False)
            spent = time.process_time() - started
            cells.append(f"{spent:12.3f}")
            if spent > args.max_seconds:
                cells += [f"{'-':>12}"] * (len(sizes) - len(cells))
                break
        print(f"{name:34}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
