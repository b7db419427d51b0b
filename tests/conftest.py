from __future__ import annotations

import pytest
from hypothesis import settings

# No time limits on property tests: these machines are shared and noisy, and timing belongs in
# bench/, not in tests (hypothesis' default 200 ms deadline failed a pure analysis test here).
settings.register_profile("untimed", deadline=None)
settings.load_profile("untimed")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
