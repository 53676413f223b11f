"""Fetch tiles through an ``XYZSource`` on several threads, as one process of a load test.

Run by the limit tests as a child process::

    python -m tests.xyzload --config '{"url": ..., "max_in_flight": 4}' --client A \\
        --threads 6 --requests 30 --start-at 1735000000.5 --time-limit 60

The limits backend follows the environment (TILE_LIMITS_REDIS_URL,
TILE_LIMITS_KEY_PREFIX, CACHECAMPAIGN_VAR_DIR). The process prints one JSON
line with the counts of fetched tiles and errors. Each thread fetches its
share of ``--requests`` distinct tiles and stops early at ``--time-limit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter

import django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="The xyz source configuration as JSON.")
    parser.add_argument("--layer", default="landsat", help="Layer the tiles belong to.")
    parser.add_argument("--client", required=True, help="Value of the X-Test-Client header.")
    parser.add_argument("--threads", type=int, default=4, help="Threads fetching at once.")
    parser.add_argument("--requests", type=int, default=20, help="Tiles to fetch in total.")
    parser.add_argument("--start-at", type=float, default=0.0, help="Wall-clock time (Unix seconds) to start at.")
    parser.add_argument("--time-limit", type=float, default=60.0, help="Seconds after the start to stop at.")
    arguments = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cachecampaign.settings")
    django.setup()
    from tiles.address import TileAddress
    from tiles.periods import Period
    from tiles.sources.xyz import XYZSource

    config = json.loads(arguments.config)
    config["headers"] = {**config.get("headers", {}), "X-Test-Client": arguments.client}
    source = XYZSource(arguments.layer, config)

    # Distinct tiles per client, so the server's per-path counts stay apart.
    client_row = sum(arguments.client.encode()) % 1000
    addresses = [
        TileAddress(arguments.layer, "landsat-tvi-true", Period.DRY, 2020, None, 14, index, client_row)
        for index in range(arguments.requests)
    ]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    time.sleep(max(0.0, arguments.start_at - time.time()))
    deadline = time.monotonic() + arguments.time_limit

    def work(thread_index: int) -> None:
        for address in addresses[thread_index :: arguments.threads]:
            if time.monotonic() > deadline:
                with lock:
                    outcomes["skipped after the time limit"] += 1
                continue
            try:
                source.fetch(address)
                outcome = "ok"
            except Exception as error:  # noqa: BLE001 - counted and printed for the parent test
                outcome = f"{type(error).__name__}: {error}"
            with lock:
                outcomes[outcome] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(index,)) for index in range(arguments.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    json.dump({"outcomes": dict(outcomes), "elapsed": time.monotonic() - started}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
