"""Storage tests change partitions (create, drop) and so each works in a migrated database of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.infra import create_database, drop_database


# Longer than any storage test takes from reading the clock to the end of what it checks.
MIDNIGHT_MARGIN_SECONDS = 120


@pytest.fixture
def own_database(postgres_url: str) -> Iterator[str]:
    """A migrated database of its own, given out clear of UTC midnight: every retention horizon (now - N days)
    passes a partition's end at midnight, so a test expecting the partitions expired at its own `now` would
    see a command run a few seconds later drop one more."""
    now = datetime.now(timezone.utc)
    to_midnight = (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
                   - now).total_seconds()
    if to_midnight < MIDNIGHT_MARGIN_SECONDS:
        time.sleep(to_midnight + 1)
    url = asyncio.run(create_database(postgres_url))
    yield url
    asyncio.run(drop_database(postgres_url, url))
