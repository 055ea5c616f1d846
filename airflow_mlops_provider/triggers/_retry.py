"""Retry a trigger's blocking check on transient errors (tenacity, which Airflow installs).

A deferred task waits in the triggerer for minutes or hours; one dropped connection or one 503
from a tracking server must not fail it. Each trigger calls its blocking check through
:func:`call_in_thread_with_retries`, with a predicate saying which errors are transient for its
backend (the hook's ``is_transient_error``). Anything else fails at once, as before.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

__all__ = ["TRANSIENT_ATTEMPTS", "call_in_thread_with_retries"]

T = TypeVar("T")

#: Tries of one check before a transient error fails the trigger (waits 1, 2, 4, 8 s between).
TRANSIENT_ATTEMPTS = 5


async def call_in_thread_with_retries(
    func: Callable[..., T],
    *args: Any,
    is_transient: Callable[[BaseException], bool],
    log: logging.Logger | Any,
    what: str,
    attempts: int = TRANSIENT_ATTEMPTS,
    max_wait: float = 30.0,
) -> T:
    """
    Run ``func(*args)`` in a worker thread, retrying transient errors with exponential back-off.

    :param func: The blocking check.
    :param is_transient: True for an error worth retrying (connection reset, timeout, 5xx).
    :param log: Where each retry is reported.
    :param what: Names the check in the log, e.g. ``"MLflow registry query for 'churn'"``.
    :param attempts: Tries before the last error is raised.
    :param max_wait: Longest wait between two tries, in seconds.
    :raises: the last error, once ``attempts`` tries failed or the error is not transient.
    """
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

    def report(state: Any) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s failed (try %d of %d), retrying: %s: %s",
            what,
            state.attempt_number,
            attempts,
            type(err).__name__,
            err,
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=1, max=max_wait),
        before_sleep=report,
        reraise=True,
    ):
        with attempt:
            return await asyncio.to_thread(func, *args)
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover
