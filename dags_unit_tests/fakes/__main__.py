"""`python -m fakes --generate-pointsapport ROWS [--prerender SIZE]` (from dags_unit_tests/): serve a
generated points d'apport feed on 127.0.0.1, print its data-fair lines URL, serve until killed."""

from __future__ import annotations

import argparse

from fakes.feed_server import FeedServer
from fakes.generated import pointsapport_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--generate-pointsapport", type=int, metavar="ROWS", required=True)
    parser.add_argument("--dataset", default="donnees-eo-bench")
    parser.add_argument("--prerender", type=int, metavar="SIZE", help="render pages of SIZE rows before serving")
    args = parser.parse_args(argv)
    rows = pointsapport_rows(args.generate_pointsapport)
    if args.prerender:
        rows.prerender(args.prerender)
    server = FeedServer(args.port)
    server.set_dataset(args.dataset, rows)
    print(server.datafair_url(args.dataset, size=str(args.prerender or 10_000)), flush=True)
    server.start()
    try:
        server.wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
