"""Points d'apport (data-fair datasets of the eco-organismes, pointsapport-columns.md): the common
fields themselves, with the address as one BAN line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qfdmo.sources.formats import IDENTIFIER_FIELDS, FeedFormat

if TYPE_CHECKING:
    from qfdmo.feeds.http import HttpClient
    from qfdmo.feeds.readers import FeedPages


def read(client: HttpClient, url: str) -> FeedPages:
    from qfdmo.feeds.readers import read_datafair

    return read_datafair(client, url)


FORMAT = FeedFormat(name="pointsapport", read=read, identifier_fields=IDENTIFIER_FIELDS, ban_address=True)
