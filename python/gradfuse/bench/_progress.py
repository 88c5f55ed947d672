"""A progress bar on stderr: tqdm when it is installed, else a small one of our own.

On a terminal the bar redraws in place; otherwise (a log, CI) it prints a line at most every
few seconds, so logs stay short.
"""

from __future__ import annotations

import importlib
import sys
import time
from types import TracebackType
from typing import Any, TextIO

from typing_extensions import Self


class Progress:
    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.n = 0
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._tqdm: Any = None
        try:
            tqdm = importlib.import_module("tqdm").tqdm  # optional
            self._tqdm = tqdm(total=self.total, desc=desc, file=self.stream, leave=False)
        except ImportError:
            pass

    def set(self, desc: str) -> None:
        self.desc = desc
        if self._tqdm is not None:
            self._tqdm.set_description_str(desc, refresh=True)
        else:
            self._draw(force=False)

    def update(self, n: int = 1) -> None:
        self.n = min(self.n + n, self.total)
        if self._tqdm is not None:
            self._tqdm.update(n)
        else:
            self._draw(force=False)

    def _draw(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self._tty else 5.0):
            return
        self._last = now
        frac = self.n / self.total
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        width = 24
        fill = int(frac * width)
        bar = "#" * fill + "." * (width - fill)
        text = (
            f"[{bar}] {100 * frac:3.0f}%  {_clock(elapsed)} elapsed, ~{_clock(eta)} left  "
            f"{self.desc}"
        )
        if self._tty:
            cols = 100
            self.stream.write("\r" + text[:cols].ljust(cols))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._tty:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"
