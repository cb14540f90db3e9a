"""Nested, timed progress steps on stderr; results go to stdout."""
import contextlib
import sys
import time

_depth = 0


def info(message: str) -> None:
    print("  " * _depth + message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(title: str, timings: dict | None = None, key: str | None = None):
    """Print '‣ title', run the block, print how long it took.

    With ``timings``, the seconds are also stored there under ``key``
    (default: the title).
    """
    global _depth
    info(f"‣ {title}")
    _depth += 1
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        _depth -= 1
        elapsed = time.monotonic() - start
        if timings is not None:
            timings[key or title] = round(elapsed, 1)
        info(f"  {'done' if ok else 'failed'}: {title} ({elapsed:.1f} s)")
