"""``TailingSubprocessHook``: Airflow's ``SubprocessHook`` that also keeps the last output lines.

The local runtime (:mod:`airflow_mlops_provider.operators.local`) needs the last lines of a
failed command for its error message, as the container runtimes give them; the stock hook keeps
only the last line. This hook keeps them from the lines the stock hook logs, through its public
``log`` property, and changes nothing else.
"""

from __future__ import annotations

import collections
from typing import Any

from airflow.providers.standard.hooks.subprocess import SubprocessHook

__all__ = ["TailingLog", "TailingSubprocessHook"]


class TailingLog:
    """The hook's logger: every record goes to ``log``; the output lines are also kept in ``tail``."""

    def __init__(self, log: Any, tail: collections.deque[str]) -> None:
        self._target = log
        self.tail = tail

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # SubprocessHook.run_command logs each output line as ``log.info("%s", line)`` and its
        # own messages with text around the arguments (providers-standard 1.9.0, the floor
        # apache-airflow-core requires, to 1.21.0, read in both).
        if msg == "%s" and len(args) == 1:
            self.tail.append(str(args[0]))
        self._target.info(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class TailingSubprocessHook(SubprocessHook):
    """
    ``SubprocessHook`` that logs through the operator's log and keeps the last output lines.

    :param log: Where the output lines are logged (the operator's ``self.log``).
    :param tail_lines: How many of the last output lines ``tail`` keeps.
    """

    def __init__(self, *, log: Any, tail_lines: int) -> None:
        super().__init__()
        self._tailing_log = TailingLog(log, collections.deque(maxlen=tail_lines))

    @property
    def log(self) -> Any:  # type: ignore[override]
        return self._tailing_log

    @property
    def tail(self) -> list[str]:
        """The last output lines of the command run last."""
        return list(self._tailing_log.tail)
