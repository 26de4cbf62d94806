"""What the benchmarks share: the whole stack as `make up` runs it, one per benchmark module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from concord_testing import OtlpReceiver
from tests.e2e.conftest import RunningStack, start_stack, stop_stack


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """The stack with an OTLP receiver, so a benchmark can read the spans of what it ran; a
    module's STACK_ENV adds to the services' environment."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_bench_")
    env: dict[str, str] | None = getattr(request.module, "STACK_ENV", None)
    with OtlpReceiver() as receiver:
        running = start_stack(tmp_path_factory.mktemp(name), receiver, env)
        try:
            yield running
        finally:
            stop_stack(running)
