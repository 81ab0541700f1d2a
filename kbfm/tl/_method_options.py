"""``method=`` dispatchers over one function per method: which option belongs to which.

``kbfm.tl.annotate`` and ``kbfm.tl.deconvolve`` keep one signature with every option
of every method; each method has its own function that takes only its own. An option of
another method set away from its default would be silently ignored, so it is refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

from .._errors import KbfmInputError, closest_names


def keyword_defaults(function: Callable) -> dict[str, object]:
    """The default of every parameter of ``function`` that has one."""
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def call_with_its_options(function: Callable, adata: object, options: Mapping[str, object]):
    """Call ``function(adata, ...)`` with the ``options`` its signature takes."""
    takes = inspect.signature(function).parameters
    return function(adata, **{name: value for name, value in options.items() if name in takes})


def check_method(function: str, method: str, methods: Sequence[str]) -> None:
    """Refuse an unknown ``method``, naming the valid ones and the closest match."""
    if method not in methods:
        msg = f"{function}: unknown method {method!r}; choose from {list(methods)}." + (
            closest_names(method, methods)
        )
        raise KbfmInputError(msg)


def is_default(value: object, default: object) -> bool:
    """Whether ``value`` is its parameter's ``default`` (``False`` when ``==`` cannot say)."""
    if value is default:
        return True
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays and other objects without a plain ==
        return False


def reject_foreign_options(
    function: str,
    method: str,
    options: Mapping[str, object],
    *,
    defaults: Mapping[str, object],
    owners: Mapping[str, Sequence[str]],
) -> None:
    """Refuse options that only another method uses, when set away from their default.

    Parameters
    ----------
    function
        Name of the dispatcher, for the message (``"annotate"``).
    method
        The chosen method.
    options
        The options the caller passed (name -> value); options no method owns are
        shared and never refused.
    defaults
        The dispatcher's default of each option.
    owners
        ``{method: names of the options only some methods use}``.

    Raises
    ------
    KbfmInputError
        Naming each foreign option, its value and the method(s) it belongs to.
    """
    own = set(owners[method])
    foreign = []
    for name, value in options.items():
        users = [m for m, names in owners.items() if name in names]
        if not users or name in own or is_default(value, defaults[name]):
            continue
        where = " or ".join(f"method={m!r}" for m in users)
        foreign.append(f"{name}={value!r} ({where})")
    if foreign:
        msg = (
            f"{function}(method={method!r}) does not use "
            + ", ".join(foreign)
            + (
                "; drop it, or use the method it belongs to."
                if len(foreign) == 1
                else "; drop them, or use the methods they belong to."
            )
        )
        raise KbfmInputError(msg)
