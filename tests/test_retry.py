"""Retry: the backoff it waits, the failures it covers, its stored form, and the input it refuses.

The formula is checked against exact rational arithmetic (no float overflow can hide in the
reference), the matching by ``module.qualname`` against classes this process cannot import,
and every bad argument must be :class:`InvalidInput` naming the argument.
"""

from __future__ import annotations

import builtins
import json
import math
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bad_input import bad_durations
from jobkit import InvalidInput
from jobkit._records import MAX_DURATION, Retry

LONGEST = MAX_DURATION.total_seconds()
# A timedelta keeps microseconds: a delay is the formula's value to within one of them.
TICK = 1e-6

seconds = st.floats(min_value=0, max_value=10**6)
durations = st.one_of(seconds, st.integers(0, 10**6), st.timedeltas(timedelta(0), timedelta(days=30)))
factors = st.floats(min_value=1, max_value=100)
jitters = st.floats(min_value=0, max_value=1)
spreads = st.floats(min_value=0, max_value=1)
# Every builtin Exception class but the groups (they cannot be made without arguments).
BUILTIN_EXCEPTIONS = sorted(
    (
        value
        for value in vars(builtins).values()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and not issubclass(value, BaseExceptionGroup)
        and value.__module__ == "builtins"
    ),
    key=lambda cls: cls.__qualname__,
)
exception_classes = st.sampled_from(BUILTIN_EXCEPTIONS)
retries = st.builds(
    Retry,
    attempts=st.integers(1, 1000),
    backoff=durations,
    factor=factors,
    max_backoff=st.one_of(durations, st.just(MAX_DURATION)),
    jitter=jitters,
    on=st.one_of(exception_classes, st.lists(exception_classes, min_size=1, max_size=4).map(tuple)),
)


def exact_base(retry: Retry, attempt: int) -> float:
    """``min(max_backoff, backoff * factor ** (attempt - 1))`` computed exactly."""
    grown = Fraction(retry.backoff) * Fraction(retry.factor) ** (attempt - 1)
    return float(min(Fraction(retry.max_backoff), grown))


def instance_of(cls: type[BaseException]) -> BaseException:
    """An instance without calling ``__init__`` (some builtin exceptions need arguments)."""
    return cls.__new__(cls)


class AppError(Exception):
    """An application's exception, importable as ``test_retry.AppError``."""


class SpecificAppError(AppError):
    pass


class Outer:
    class NestedError(Exception):
        """Importable only by walking ``test_retry.Outer.NestedError``."""


def foreign(module: str, qualname: str, base: type[Exception] = Exception) -> type[Exception]:
    """A class that says it lives in ``module``: as a job's exception from another process looks."""
    cls = type(qualname.rpartition(".")[2], (base,), {"__module__": module})
    cls.__qualname__ = qualname
    return cls


def stored(on: list[str], **changes: Any) -> dict[str, Any]:
    """What a store holds for a Retry (the :meth:`Retry.to_json` form)."""
    return {
        "attempts": 3,
        "backoff": 1.0,
        "factor": 2.0,
        "max_backoff": 60.0,
        "jitter": 0.0,
        "on": on,
    } | changes


class TestBackoff:
    @given(retry=retries, attempt=st.integers(1, 1000), spread=spreads)
    def test_delay_is_the_formula_spread_by_the_jitter(
        self, retry: Retry, attempt: int, spread: float
    ) -> None:
        """delay(n, spread) is min(max_backoff, backoff * factor ** (n-1)) * (1 ± jitter), ≤ 100 years."""
        base = exact_base(retry, attempt)
        want = min(LONGEST, base * (1 + retry.jitter * (2 * spread - 1)))
        got = retry.delay(attempt, spread).total_seconds()
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=TICK)
        low, high = base * (1 - retry.jitter), min(LONGEST, base * (1 + retry.jitter))
        assert low - TICK - 1e-9 * low <= got <= high + TICK + 1e-9 * high
        assert timedelta(0) <= retry.delay(attempt, spread) <= MAX_DURATION

    @given(retry=retries, attempt=st.integers(1, 1000))
    def test_the_middle_of_the_band_is_the_formula(self, retry: Retry, attempt: int) -> None:
        """A spread of 0.5 (the default) is no jitter at all."""
        want = min(LONGEST, exact_base(retry, attempt))
        assert math.isclose(retry.delay(attempt).total_seconds(), want, rel_tol=1e-9, abs_tol=TICK)
        assert retry.delay(attempt) == retry.delay(attempt, 0.5)

    @given(retry=retries, attempt=st.integers(1, 1000), spreads=st.lists(spreads, min_size=2, max_size=2))
    def test_delay_grows_with_the_spread(self, retry: Retry, attempt: int, spreads: list[float]) -> None:
        """A larger spread never waits less; with no jitter the spread does not matter."""
        low, high = sorted(spreads)
        assert retry.delay(attempt, low) <= retry.delay(attempt, high)
        flat = Retry(backoff=retry.backoff, factor=retry.factor, max_backoff=retry.max_backoff, jitter=0)
        assert flat.delay(attempt, low) == flat.delay(attempt, high)

    @given(retry=retries, attempts=st.lists(st.integers(1, 10**4), min_size=2, max_size=2), spread=spreads)
    def test_delay_never_shrinks_with_the_attempt(
        self, retry: Retry, attempts: list[int], spread: float
    ) -> None:
        """factor >= 1: a later attempt waits at least as long (up to max_backoff)."""
        first, later = sorted(attempts)
        assert retry.delay(first, spread) <= retry.delay(later, spread)

    def test_examples(self) -> None:
        """1 s doubling: 1, 2, 4, 8 s, capped by max_backoff; jitter 0.5 spans half to one and a half."""
        retry = Retry(backoff=1, factor=2, max_backoff=5, jitter=0)
        assert [retry.delay(n) for n in (1, 2, 3, 4, 10)] == [timedelta(seconds=s) for s in (1, 2, 4, 5, 5)]
        jittery = Retry(backoff=timedelta(seconds=10), factor=1, jitter=0.5)
        assert jittery.delay(7, 0.0) == timedelta(seconds=5)
        assert jittery.delay(7, 1.0) == timedelta(seconds=15)

    @pytest.mark.parametrize("attempt", [1001, 10**6, 10**100, 2**4000])
    def test_huge_attempts_never_overflow(self, attempt: int) -> None:
        """factor ** (n - 1) past any float ends at max_backoff (≤ 100 years); no growth stays as it is."""
        assert Retry(backoff=1, factor=100, max_backoff=60, jitter=0).delay(attempt) == timedelta(seconds=60)
        assert (
            Retry(backoff=1, factor=100, max_backoff=MAX_DURATION, jitter=1).delay(attempt, 1.0)
            == MAX_DURATION
        )
        assert Retry(backoff=0, factor=100, jitter=1).delay(attempt, 1.0) == timedelta(0)
        assert Retry(backoff=3, factor=1, jitter=0).delay(attempt) == timedelta(seconds=3)

    @given(attempt=st.integers(1, 10**6), factor=factors, jitter=jitters, spread=spreads)
    def test_a_zero_backoff_never_waits(
        self, attempt: int, factor: float, jitter: float, spread: float
    ) -> None:
        """backoff 0 is 0 for every attempt, even where factor ** (n - 1) overflows a float."""
        assert Retry(backoff=0, factor=factor, jitter=jitter).delay(attempt, spread) == timedelta(0)


class TestCovers:
    @given(on=st.lists(exception_classes, min_size=1, max_size=3), raised=exception_classes)
    def test_covers_the_classes_and_their_subclasses(
        self, on: list[type[Exception]], raised: type[Exception]
    ) -> None:
        """covers(exc) is isinstance(exc, on), over the builtin exception hierarchy."""
        retry = Retry(on=tuple(on))
        assert retry.covers(instance_of(raised)) == issubclass(raised, tuple(on))

    def test_default_covers_every_exception_but_not_base_exceptions(self) -> None:
        """on=(Exception,) by default: KeyboardInterrupt, SystemExit and cancellations are never retried."""
        retry = Retry()
        assert retry.covers(AppError())
        assert retry.covers(TimeoutError())
        for cls in (KeyboardInterrupt, SystemExit, GeneratorExit, BaseException):
            assert not retry.covers(cls())

    def test_application_classes_and_subclasses(self) -> None:
        """A class of the application covers its subclasses, not its base or siblings."""
        retry = Retry(on=AppError)
        assert retry.covers(SpecificAppError())
        assert retry.covers(AppError())
        assert not retry.covers(Exception())
        assert not retry.covers(ValueError())
        assert not Retry(on=SpecificAppError).covers(AppError())

    def test_names_are_module_and_qualname(self) -> None:
        """What a store keeps for each class: ``module.qualname``."""
        retry = Retry(on=(ValueError, AppError, Outer.NestedError))
        assert retry.to_json()["on"] == [
            "builtins.ValueError",
            "test_retry.AppError",
            "test_retry.Outer.NestedError",
        ]

    def test_restored_names_that_do_not_import_still_match(self) -> None:
        """Stored by a process that had the class: matched by name here, though it cannot be imported."""
        name = "jobkit_test_nowhere.errors.RemoteError"
        with pytest.raises(ImportError):
            __import__("jobkit_test_nowhere")
        retry = Retry.from_json(stored([name]))
        remote = foreign("jobkit_test_nowhere.errors", "RemoteError")
        assert retry.covers(remote())
        assert retry.covers(foreign("test_retry", "SpecificRemoteError", remote)())
        # the stand-in class used for what cannot be imported must not widen the match
        assert not retry.covers(Exception())
        assert not retry.covers(ValueError())
        assert not retry.covers(foreign("jobkit_test_nowhere.other", "RemoteError")())
        assert retry.to_json()["on"] == [name], "the name is stored again as it came"

    def test_restored_mix_of_importable_and_unknown_names(self) -> None:
        """Each stored name matches; nothing else does."""
        retry = Retry.from_json(
            stored(["builtins.LookupError", "jobkit_test_nowhere.Gone", "builtins.NoSuchError"])
        )
        assert retry.covers(KeyError())
        assert retry.covers(foreign("jobkit_test_nowhere", "Gone")())
        assert retry.covers(foreign("builtins", "NoSuchError")())
        assert not retry.covers(TypeError())
        assert LookupError in retry.on

    def test_restored_names_that_import_give_the_classes(self) -> None:
        """In a process that has the classes (even nested ones), from_json finds them."""
        retry = Retry.from_json(stored(["test_retry.AppError", "test_retry.Outer.NestedError"]))
        assert set(retry.on) == {AppError, Outer.NestedError}
        assert retry.covers(SpecificAppError())
        assert retry.covers(Outer.NestedError())
        assert not retry.covers(ValueError())

    def test_stored_without_names_covers_every_exception(self) -> None:
        """A stored Retry with no ``on`` is the default: every Exception."""
        retry = Retry.from_json(stored([]))
        assert retry.covers(AppError())
        assert not retry.covers(KeyboardInterrupt())


class TestJson:
    @given(retry=retries)
    def test_round_trip(self, retry: Retry) -> None:
        """to_json is plain JSON; from_json gives an equal Retry that stores the same way."""
        text = json.dumps(retry.to_json(), allow_nan=False)
        back = Retry.from_json(json.loads(text))
        assert back == retry
        assert back.to_json() == retry.to_json()
        assert back.names == retry.names
        assert set(back.on) == set(retry.on)
        for cls in BUILTIN_EXCEPTIONS:
            assert back.covers(instance_of(cls)) == retry.covers(instance_of(cls))

    def test_durations_are_stored_as_seconds(self) -> None:
        """A timedelta backoff is kept as float seconds; on is sorted."""
        retry = Retry(backoff=timedelta(minutes=2), max_backoff=timedelta(hours=1), on=[TypeError, AppError])
        assert retry.to_json() == {
            "attempts": 3,
            "backoff": 120.0,
            "factor": 2.0,
            "max_backoff": 3600.0,
            "jitter": 0.1,
            "on": ["builtins.TypeError", "test_retry.AppError"],
        }

    def test_equality_is_by_settings_and_names(self) -> None:
        """Two Retries with the same settings and classes are equal (and hash alike)."""
        assert Retry(on=[ValueError, KeyError]) == Retry(on=(KeyError, ValueError))
        assert hash(Retry(on=[ValueError, KeyError])) == hash(Retry(on=(KeyError, ValueError)))
        assert Retry(on=ValueError) != Retry(on=KeyError)
        assert Retry(attempts=2) != Retry(attempts=3)


# -- bad input ----------------------------------------------------------------------------

not_numbers = st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.lists(st.integers(), max_size=2))
not_finite = st.sampled_from([math.nan, math.inf, -math.inf])


def refused(match: str, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput, match=match) as caught:
        Retry(**kwargs)
    assert caught.value.code == "invalid_input"
    return caught.value


class TestBadInput:
    @given(
        attempts=st.one_of(
            st.integers(max_value=0),
            st.integers(min_value=1001),
            st.booleans(),
            st.floats(),
            not_numbers,
        )
    )
    def test_attempts(self, attempts: Any) -> None:
        """attempts must be an int from 1 to 1000: not a bool, not a float (not even 2.0)."""
        error = refused("^Retry attempts must be an integer from 1 to 1000, got ", attempts=attempts)
        assert repr(attempts) in str(error)

    @pytest.mark.parametrize("field", ["backoff", "max_backoff"])
    @given(value=st.one_of(bad_durations, not_numbers))
    def test_durations(self, field: str, value: Any) -> None:
        """backoff and max_backoff: seconds or a timedelta, finite, not negative, at most 100 years."""
        refused(f"^Retry {field}", **{field: value})

    @pytest.mark.parametrize("field", ["backoff", "max_backoff"])
    def test_duration_messages(self, field: str) -> None:
        """The message says which argument and what is wrong with it."""
        assert "negative" in str(refused(f"^Retry {field}", **{field: -1}))
        assert "negative" in str(refused(f"^Retry {field}", **{field: timedelta(seconds=-1)}))
        assert "finite" in str(refused(f"^Retry {field}", **{field: math.nan}))
        assert "100 years" in str(refused(f"^Retry {field}", **{field: LONGEST * 2}))
        assert "100 years" in str(refused(f"^Retry {field}", **{field: MAX_DURATION + timedelta(days=1)}))

    @given(
        factor=st.one_of(st.floats(max_value=1, exclude_max=True), st.floats(min_value=100, exclude_min=True))
    )
    def test_factor_out_of_range(self, factor: float) -> None:
        """factor is from 1 to 100 (a factor < 1 would shrink the wait)."""
        refused("^Retry factor must be", factor=factor)

    @given(factor=st.one_of(not_finite, not_numbers))
    def test_factor_not_a_number(self, factor: Any) -> None:
        refused("^Retry factor must be a finite number, got ", factor=factor)

    @given(
        jitter=st.one_of(st.floats(max_value=0, exclude_max=True), st.floats(min_value=1, exclude_min=True))
    )
    def test_jitter_out_of_range(self, jitter: float) -> None:
        """jitter is a fraction from 0 to 1."""
        refused("^Retry jitter must be", jitter=jitter)

    @given(jitter=st.one_of(not_finite, not_numbers))
    def test_jitter_not_a_number(self, jitter: Any) -> None:
        refused("^Retry jitter must be a finite number, got ", jitter=jitter)

    @pytest.mark.parametrize(
        "on",
        [
            ValueError(),
            "builtins.ValueError",
            None,
            int,
            object,
            KeyboardInterrupt,
            SystemExit,
            GeneratorExit,
            BaseException,
            BaseExceptionGroup,
            (ValueError, KeyboardInterrupt),
            [ValueError, 3],
        ],
        ids=repr,
    )
    def test_on_takes_exception_classes_only(self, on: Any) -> None:
        """Instances, names, other classes and BaseException subclasses are refused, naming the culprit."""
        error = refused(r"^Retry on= takes exception classes \(subclasses of Exception\), got ", on=on)
        assert str(error).endswith(".")

    @pytest.mark.parametrize("on", [(), [], set(), frozenset()], ids=repr)
    def test_on_cannot_be_empty(self, on: Any) -> None:
        refused("^Retry on= must name at least one exception class", on=on)

    @given(
        on=st.one_of(
            st.builds(instance_of, exception_classes),
            st.sampled_from([int, str, object, type, KeyboardInterrupt, SystemExit, BaseException]),
            st.integers(),
            st.text(max_size=5),
        )
    )
    def test_on_random_bad_values(self, on: Any) -> None:
        refused("^Retry on= takes exception classes", on=on)
        refused("^Retry on= takes exception classes", on=(ValueError, on))

    @given(
        attempts=st.sampled_from([1, 1000]),
        factor=st.sampled_from([1, 1.0, 100]),
        jitter=st.sampled_from([0, 1]),
    )
    def test_the_edges_are_accepted(self, attempts: int, factor: float, jitter: float) -> None:
        """The limits themselves are valid, and ints are taken for floats."""
        retry = Retry(attempts=attempts, backoff=0, factor=factor, max_backoff=MAX_DURATION, jitter=jitter)
        assert retry.max_backoff == LONGEST
        assert isinstance(retry.factor, float)
        assert isinstance(retry.jitter, float)
        assert Retry(on=ExceptionGroup).covers(ExceptionGroup("x", [ValueError()]))
