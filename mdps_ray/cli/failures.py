"""What a failed command tells the user: one line and an exit code, never a traceback for a known cause.

    2  the inputs or the configuration (fix them and rerun)
    3  storage unavailable past the retry budget (nothing committed; the same command resumes)
    4  `mdps trend --fail-on-drift`: a night drifted from the calibration normals (an alert, not a failure)
    130  interrupted (the same command resumes)

Errors raised in Ray actors and tasks arrive wrapped (RayTaskError, ActorDiedError, Ray Data's
UserCodeException); the chain is walked to the cause.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator

from mdps_ray.config.method import ConfigError

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError, ValueError, RuntimeError)
STORAGE_EXIT = 3
# Exception class names (botocore, aiohttp, urllib3, builtins) that mean "the store did not answer in time".
_UNAVAILABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ConnectionRefusedError",
                "ConnectionResetError", "ProxyConnectionError", "ServerTimeoutError", "TimeoutError"}
_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_USER_ERROR_NAMES = {"ValueError", "FileNotFoundError", "ConfigError", "PermissionError", *_CREDENTIALS}
_UNKNOWN_OPTION = re.compile(r"\w*(Session|FileSystem)\.__init__\(\) got an unexpected keyword argument '[^']*'")
_THROTTLED = ("SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError", "(503)", "(500)", "Throttling")


_RAISED = re.compile(r"^(?:[\w.]+\.)?(\w+): (.*)$", re.M)  # "botocore.exceptions.X: message" lines of a traceback


def causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every exception it wraps (``__cause__``, ``__context__``, Ray's ``cause``), once each."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [c for c in (e.__cause__, e.__context__, getattr(e, "cause", None)) if isinstance(c, BaseException)]


def storage_unavailable(err: BaseException) -> str | None:
    """"<error type>: <message>" of the cause in ``err``'s chain that says the store could not be reached
    or kept throttling, if any. Ray Data's UserCodeException carries an actor's error as text only, so the
    text of each link is searched too."""
    for e in causes(err):
        names = {c.__name__ for c in type(e).__mro__}  # Ray's RayTaskError(X) subclasses X
        if names & _UNAVAILABLE or ("ClientError" in names and any(t in str(e) for t in _THROTTLED)):
            return f"{type(e).__name__}: {one_line(e)}"
        for name, message in reversed(_RAISED.findall(str(e))):
            if name in _UNAVAILABLE or (name == "ClientError" and any(t in message for t in _THROTTLED)):
                return f"{name}: {message.strip()}"
    return None


_NO_SPACE = re.compile(r"No space left on device(?:: '([^']+)')?")


def no_space(err: BaseException) -> str | None:
    """Where the disk filled up (a path, or "the disk") when ``err``'s chain holds ENOSPC, also as an actor's text."""
    for e in causes(err):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return str(e.filename) if e.filename else "the disk"
        found = _NO_SPACE.search(str(e))
        if found:
            return found[1] or "the disk"
    return None


def user_error(err: BaseException) -> str | None:
    """The message of the first user error in ``err``'s chain (a bad input, configuration or credentials),
    also when an actor's error arrived as text only."""
    for e in causes(err):
        names = {c.__name__ for c in type(e).__mro__}
        if (isinstance(e, USER_ERRORS) and not names & _UNAVAILABLE) or names & _CREDENTIALS:
            return one_line(e)
        unknown = _UNKNOWN_OPTION.search(str(e))
        if unknown:  # the key's name only: values may be secrets
            return f"expected storage_options that the filesystem accepts, got {unknown[0]}"
    for e in causes(err):
        for name, message in reversed(_RAISED.findall(str(e))):
            if name in _USER_ERROR_NAMES:
                return message.strip()
    return None


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
