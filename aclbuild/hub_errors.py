"""Talking to the Hub safely: retries with back-off, one-line project errors, and a token that never leaks.

Every failure of huggingface_hub or the transport becomes a :class:`aclbuild.errors.HubError` (or
:class:`AuthError`) with one clear line; every message passes through :func:`scrub` first.

Retries: huggingface_hub's ``http_backoff`` already retries the requests it sends through it (preupload, LFS
transfers, tree listings), so those calls are made once here. :func:`with_retries` is for the calls it sends once
(``repo_info``, ``create_repo``, ``create_branch``, ``create_commit``); it retries what ``http_backoff`` would retry
(its own default exceptions and status codes, read from its signature), and a commit only after checking that the
lost one did not land (``http_backoff`` cannot tell). The transport exceptions are ``httpx2``'s, the HTTP client
huggingface_hub depends on; huggingface_hub re-exports only their base class (``huggingface_hub.errors.HTTPError``).

Example:
    >>> scrub("401 for Bearer hf_secret", "hf_secret")
    '401 for Bearer ***'
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from aclbuild.errors import AuthError, HubError, InputError

RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before each retry of a transient failure; ACLBUILD_HUB_RETRY_DELAYS overrides

T = TypeVar("T")


def scrub(text: str, token: str | None) -> str:
    """``text`` with the token (and any ``Bearer`` value) masked: messages must never carry it."""
    if token:
        text = text.replace(token, "***")
    return re.sub(r"(Bearer\s+)\S+", r"\1***", text)


def quiet_hub_logs() -> None:
    """Silence huggingface_hub's warnings: our errors say what went wrong, in one line each."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


def retry_delays() -> tuple[float, ...]:
    """The back-off schedule: RETRY_DELAYS, or ACLBUILD_HUB_RETRY_DELAYS such as ``0.5,1,2`` (empty: no retries)."""
    text = os.environ.get("ACLBUILD_HUB_RETRY_DELAYS")
    if text is None:
        return RETRY_DELAYS
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"ACLBUILD_HUB_RETRY_DELAYS={text!r}: write seconds and commas, e.g. 0.5,1,2") from None


def answer_lost(exc: BaseException) -> bool:
    """Whether the request may have reached the Hub without its answer coming back (not a refused connection)."""
    import httpx2

    cause = _root_cause(exc)
    return isinstance(cause, httpx2.TransportError) and not isinstance(
        cause, (httpx2.ConnectError, httpx2.ConnectTimeout)
    )


def with_retries(call: Callable[[], T], give_up: Callable[[BaseException], bool] | None = None) -> T:
    """``call()``, retried with back-off on transient failures (connection errors, 429 and 5xx answers)."""
    for delay in (*retry_delays(), None):
        try:
            return call()
        except Exception as exc:  # only transient ones are retried; the rest are re-raised as they are
            if delay is None or not is_transient(exc):
                raise
            time.sleep(delay)
            if give_up is not None and give_up(exc):
                raise
    raise AssertionError("unreachable")


@functools.cache
def backoff_policy() -> tuple[tuple[type[BaseException], ...], tuple[int, ...]]:
    """The exceptions and status codes huggingface_hub's ``http_backoff`` retries by default.

    Example:
        >>> exceptions, statuses = backoff_policy()
        >>> 503 in statuses, 404 in statuses, any(e.__name__ == "TimeoutException" for e in exceptions)
        (True, False, True)
    """
    from huggingface_hub.utils import http_backoff

    params = inspect.signature(http_backoff).parameters
    exceptions, statuses = params["retry_on_exceptions"].default, params["retry_on_status_codes"].default
    return (
        (exceptions,) if isinstance(exceptions, type) else tuple(exceptions),
        (statuses,) if isinstance(statuses, int) else tuple(statuses),
    )


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying, as ``http_backoff`` judges it (timeouts, network errors, a dropped
    answer; 408, 429, 5xx), possibly wrapped."""
    from huggingface_hub.errors import HfHubHTTPError

    exceptions, statuses = backoff_policy()
    if isinstance(exc, exceptions):
        return True
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code in statuses
    cause = _root_cause(exc)
    return cause is not exc and is_transient(cause)


@contextlib.contextmanager
def hub_errors(
    endpoint: str,
    repo_id: str,
    token: str | None,
    planned_head: str | None = None,
    read_head: Callable[[], str] | None = None,
    reading: bool = False,
) -> Iterator[None]:
    """Turn huggingface_hub and transport exceptions into one-line project errors, token scrubbed. ``token`` is
    the one the requests carry (None: none was sent); ``reading``: the requests only read (verify, a dry run).
    Around a commit, ``planned_head`` (the head it was planned on) and ``read_head`` let the line say where the
    remote is after the failure."""
    try:
        yield
    except (HubError, InputError):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure talking to the Hub becomes one line
        error = describe_hub_error(exc, endpoint, repo_id, has_token=bool(token), reading=reading)
        if planned_head:
            error = type(error)(f"{error}; {head_after_failure(planned_head, read_head)}")
        raise type(error)(scrub(str(error), token)) from None


def head_after_failure(planned_head: str, read_head: Callable[[], str] | None) -> str:
    """Where a failed commit left the remote, read after the failure: another push may have moved the head since the
    plan was made.

    Example:
        >>> head_after_failure("1234567aaa", lambda: "1234567aaa")
        'the push failed and the remote is unchanged at commit 1234567'
        >>> head_after_failure("1234567aaa", lambda: "89abcdefff")   # doctest: +ELLIPSIS
        'the push failed; the remote is now at commit 89abcde (it was at 1234567 when this push began: ...); run ...'
    """
    try:
        head = read_head() if read_head is not None else planned_head
    except Exception:  # noqa: BLE001 - the Hub may be unreachable now: say what is known
        return f"the push failed; the remote was at commit {planned_head[:7]} when it began (its head is unreadable)"
    if head == planned_head:
        return f"the push failed and the remote is unchanged at commit {planned_head[:7]}"
    return (f"the push failed; the remote is now at commit {head[:7]} (it was at {planned_head[:7]} when this push "
            "began: another push landed meanwhile); run the push again")  # fmt: skip


def describe_hub_error(
    exc: BaseException, endpoint: str, repo_id: str, has_token: bool = True, reading: bool = False
) -> HubError:
    """One clear line for a failure talking to the Hub (``reading``: a 403 refused a read, not a write)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    cause = _root_cause(exc)
    if isinstance(cause, httpx2.ConnectError):
        return HubError(f"cannot reach the Hub at {endpoint} ({_first_line(cause) or 'connection refused'})")
    if isinstance(cause, httpx2.TransportError):
        return HubError(f"the connection to {endpoint} failed ({type(cause).__name__}: {_first_line(cause)})")
    if isinstance(cause, RevisionNotFoundError):
        return HubError(f"{repo_id}: the revision does not exist")
    status = cause.response.status_code if isinstance(cause, HfHubHTTPError) and cause.response is not None else None
    if status == 401 and not has_token:
        return AuthError(f"{repo_id} is not readable without a token at {endpoint} (401): it is private or missing")
    if status == 401:
        return AuthError(f"the Hub at {endpoint} refused the token (401 Unauthorized); check --token or HF_TOKEN, "
                         "or log in again with `hf auth login`")  # fmt: skip
    if status == 403 and reading:
        return AuthError(f"the Hub at {endpoint} refused the token for {repo_id} (403 Forbidden): it may not read "
                         "this repo; check --token or HF_TOKEN, or log in with an account that may")  # fmt: skip
    if status == 403:
        return AuthError(f"you may not write to {repo_id} (403 Forbidden): the namespace belongs to someone else "
                         "or the token lacks write access")  # fmt: skip
    if isinstance(cause, RepositoryNotFoundError):
        return HubError(f"dataset repository {repo_id} not found at {endpoint} (or it is private to another account)")
    if status == 412:
        return HubError(f"{repo_id} changed on the Hub while pushing")  # the commit's caller says where it is now
    if status is not None:
        return HubError(f"the Hub answered {status} for {repo_id}: {_server_message(cause)}")
    return HubError(f"talking to the Hub at {endpoint} failed: {type(cause).__name__}: {_first_line(cause)}")


def _root_cause(exc: BaseException) -> BaseException:
    """The HTTP or transport error behind a wrapper (huggingface_hub wraps them in RuntimeError and ValueError)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    seen, current = set(), exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (HfHubHTTPError, httpx2.TransportError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _server_message(exc) -> str:
    return getattr(exc, "server_message", None) or _first_line(exc)
