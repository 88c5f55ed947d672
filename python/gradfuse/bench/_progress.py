"""Progress on stderr for ``gradfuse bench``, ``gradfuse check`` and the examples: tqdm's bar
(tqdm is a dependency of the ``bench`` extra; without it, no bar).

On a terminal tqdm redraws its line in place. Anywhere else (a log file, CI) a redraw is a
carriage return that a log keeps, and hundreds of them make one endless line: there each
redraw becomes a line of its own, at most one every ``LOG_INTERVAL_S`` seconds.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TextIO, TypeVar

from typing_extensions import Self

LOG_INTERVAL_S = 10.0

T = TypeVar("T")


class _Lines:
    """A file for tqdm that writes each redraw (``"\\r" + bar``) as one line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _is_tty(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def tqdm_bar(total: int | None, desc: str = "", stream: TextIO | None = None, **kw: Any) -> Any:
    """A tqdm bar on ``stream`` (default stderr), in place on a terminal and as separate lines
    elsewhere; None when tqdm is not installed."""
    try:
        tqdm = importlib.import_module("tqdm").tqdm
    except ImportError:
        return None
    stream = stream if stream is not None else sys.stderr
    if not _is_tty(stream):
        kw = {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S, **kw}
        kw.setdefault("ncols", 100)
        return tqdm(total=total, desc=desc, file=_Lines(stream), **kw)
    return tqdm(total=total, desc=desc, file=stream, **kw)


def progress(
    items: Iterable[T], total: int | None = None, desc: str = "", stream: TextIO | None = None
) -> Iterator[T]:
    """``items``, advancing a :func:`tqdm_bar` per item (the examples' training loops)."""
    bar = tqdm_bar(total, desc, stream)
    if bar is None:
        yield from items
        return
    with bar:
        for x in items:
            yield x
            bar.update()


class Progress:
    """The bench's bar: a total, a description that changes per case, ``update()``."""

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self._bar = tqdm_bar(self.total, desc, stream, leave=False)

    def set(self, desc: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(desc, refresh=False)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
