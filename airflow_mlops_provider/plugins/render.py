"""Server-side HTML for the plugin's pages: Jinja2 with autoescaping, and the shared formatting.

Everything a page shows that came from a user, a model, a tag, a parameter or an error goes
through Jinja2's autoescaping; nothing is marked safe except the SVG that :mod:`charts` builds
from escaped parts. The pages carry no script but ``static/links.js`` (links out of
Airflow's sandboxed frame), and the app's Content-Security-Policy (``script-src 'self'``, no
inline script) keeps it so. Secrets are redacted with Airflow's masker before they reach
a template (:func:`redact`).
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timezone
from typing import Any

from fastapi.responses import HTMLResponse

__all__ = ["fmt_age", "fmt_number", "fmt_seconds", "fmt_time", "page", "redact"]

#: The nav views, for the header of every page: (path under /mlops, label).
NAV = (("/mlops/models", "Models"), ("/mlops/features", "Features"), ("/mlops/gpus", "GPUs"))


@functools.cache
def _env() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("airflow_mlops_provider.plugins", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(number=fmt_number, seconds=fmt_seconds, time=fmt_time, age=fmt_age, redact=redact)
    env.globals["nav"] = NAV
    return env


def page(template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """
    Render ``templates/<template>`` (which extends ``base.html``) into an HTML response.

    :param template: The template's file name.
    :param status_code: The response's status.
    :param context: The template's variables; ``title`` is the page title.
    """
    html = _env().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code)


def redact(value: Any) -> Any:
    """Return ``value`` with every secret Airflow's masker knows replaced by ``***``."""
    from airflow_mlops_provider._compat.airflow_ui import redact as airflow_redact

    return airflow_redact(value)


def fmt_number(value: Any, digits: int = 4) -> str:
    """A metric for a table: ``digits`` significant digits, '' for None, text as is."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def fmt_seconds(value: Any) -> str:
    """A duration: ``850 ms``, ``12.3 s``, ``4m 05s``, ``2h 03m``; '' for None."""
    if value is None:
        return ""
    seconds = float(value)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        # MLflow timestamps are milliseconds since the epoch.
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def fmt_time(value: Any) -> str:
    """A timestamp (datetime, ISO text or epoch seconds/milliseconds) as ``2026-12-02 19:08 UTC``."""
    when = _as_datetime(value)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if when else ""


def fmt_age(value: Any, now: datetime | None = None) -> str:
    """How long ago ``value`` was: ``3 min ago``, ``2 h ago``, ``5 d ago``."""
    when = _as_datetime(value)
    if when is None:
        return ""
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"
