"""The parity check shared by the facades' tests: the same public methods, the same parameters."""

from __future__ import annotations

import inspect
from collections.abc import Iterable


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    """The public callables defined on ``cls`` itself, with their signatures."""
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    }


def assert_same_api(
    reference: type,
    other: type,
    *,
    only: Iterable[str] | None = None,
    extra: Iterable[str] = (),
    drop_parameters: Iterable[str] = (),
) -> None:
    """``other`` has the public methods of ``reference`` (or just those in ``only``) plus
    ``extra``, each with the same parameters in the same order (names, kinds, defaults and
    annotations), leaving out the parameters named in ``drop_parameters``."""
    expected = public_methods(reference)
    if only is not None:
        wanted = set(only)
        assert wanted <= set(expected), sorted(wanted - set(expected))
        expected = {name: signature for name, signature in expected.items() if name in wanted}
    found = public_methods(other)
    assert set(found) == set(expected) | set(extra), (
        sorted(set(expected) - set(found)),
        sorted(set(found) - set(expected) - set(extra)),
    )
    dropped = set(drop_parameters)
    for name, signature in expected.items():
        want = [p for p in signature.parameters.values() if p.name not in dropped]
        assert want == list(found[name].parameters.values()), name
