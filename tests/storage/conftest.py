"""Storage tests change partitions (create, drop) and so each works in a migrated database of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.support.infra import create_database, drop_database


@pytest.fixture
def own_database(postgres_url: str) -> Iterator[str]:
    url = asyncio.run(create_database(postgres_url))
    yield url
    asyncio.run(drop_database(postgres_url, url))
