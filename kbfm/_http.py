"""JSON POST with retries for OpenAI-compatible endpoints; keys come from the environment only."""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request

from ._errors import KbfmUnavailableError
from ._settings import settings

RETRY_STATUS = (408, 409, 429, 500, 502, 503, 504)
#: Largest answer read from an endpoint; a longer one is refused, not stored.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024

logger = logging.getLogger(__name__)


def check_timeout(timeout: object) -> float:
    """Return ``timeout`` as seconds, or raise a clear error for a bad value."""
    from ._errors import KbfmInputError

    try:
        value = float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        msg = f"timeout must be a positive number of seconds, got {timeout!r}."
        raise KbfmInputError(msg)
    return value


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the Authorization header to the new origin."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0917 (urllib's)
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl}", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def is_local(url: str) -> bool:
    """True for loopback URLs (allowed in offline mode: a server on this machine)."""
    return url.startswith(("http://127.", "http://localhost", "http://[::1]"))


def post_json(
    url: str,
    body: dict,
    *,
    api_key_env: str,
    what: str,
    timeout: float,
    max_retries: int,
    backoff: float,
) -> dict:
    """POST ``body`` as JSON and return the decoded answer, retrying transient failures.

    Retries HTTP 408/409/429/5xx, time-outs, refused connections and non-JSON answers
    with exponential back-off. The bearer key is read from ``$api_key_env`` at call time;
    error messages name the URL, never the key. Redirects are refused (a redirect would
    carry the key to another origin) and answers over :data:`MAX_RESPONSE_BYTES` are
    not read.

    Parameters
    ----------
    url
        Endpoint URL.
    body
        JSON-serialisable request.
    api_key_env
        Environment variable holding the key (may be unset for local servers).
    what
        Name used in error messages, e.g. ``"Chat endpoint"``.
    timeout, max_retries, backoff
        Seconds per attempt, extra attempts, and the first back-off in seconds.

    Returns
    -------
    The decoded JSON answer.
    """
    if settings.offline and not is_local(url):
        msg = f"kbfm is in offline mode; not calling {url}."
        raise KbfmUnavailableError(msg)
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(api_key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    last = ""
    for attempt in range(max_retries + 1):
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=timeout) as resp:
                raw = resp.read(MAX_RESPONSE_BYTES + 1)
            if len(raw) > MAX_RESPONSE_BYTES:
                msg = (
                    f"{what} {url} sent more than {MAX_RESPONSE_BYTES // 2**20} MiB; "
                    "refusing to read or store the answer."
                )
                raise KbfmUnavailableError(msg)
            return json.loads(raw)
        except urllib.error.HTTPError as err:
            err.close()  # the error carries the open answer
            last = f"HTTP {err.code}"
            if 300 <= err.code < 400:
                msg = (
                    f"{what} {url} answered with a redirect (HTTP {err.code}, {err.reason}); "
                    "kbfm does not follow redirects, so your API key is never sent to "
                    "another address. Use the final URL as base_url."
                )
                raise KbfmUnavailableError(msg) from None
            if err.code not in RETRY_STATUS:
                msg = f"{what} {url} refused the request: {last}."
                raise KbfmUnavailableError(msg) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
        except json.JSONDecodeError:
            last = "response is not JSON"
        if attempt < max_retries:
            wait = backoff * 2**attempt
            logger.warning(
                "Waiting for %s %s: attempt %d of %d failed (%s); retrying in %.0f s "
                "(%.0f s per attempt; set --timeout or KBFM_HTTP_TIMEOUT to change).",
                what.lower(),
                url,
                attempt + 1,
                max_retries + 1,
                last,
                wait,
                timeout,
            )
            time.sleep(wait)
    msg = f"Could not reach {what.lower()} {url} after {max_retries + 1} attempts ({last})."
    raise KbfmUnavailableError(msg)
