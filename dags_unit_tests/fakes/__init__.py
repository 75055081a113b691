"""Local stand-ins for the partner APIs (fixtures written by us, invented data)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.feed_server import FeedServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "feeds"

# Dataset ids as the real portals name them, with the fixture file serving each.
DATASETS = {
    "donnees-eo-refashion": "refashion.json",
    "donnees-eo-ocab": "ocab.json",
    "reparacteurs": "cma_reparacteur.json",
    "sinoe-(r)-annuaire-des-decheteries-dma": "sinoe_decheteries.json",
    "sinoe-r-nomenclature-dechets": "sinoe_nomenclature.json",
}


def fixture_rows(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def serve_fixtures(server: FeedServer) -> FeedServer:
    for dataset, name in DATASETS.items():
        server.set_dataset(dataset, fixture_rows(name))
    return server


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A fake data-fair + artisanat server serving the fixture feeds (import it into a test module)."""
    with FeedServer() as server:
        yield serve_fixtures(server)
