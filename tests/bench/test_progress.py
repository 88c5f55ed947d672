"""The progress bar of the bench and the examples: tqdm's, and readable in a log."""

from __future__ import annotations

import io

from gradfuse.bench import progress, tqdm_bar
from gradfuse.bench._progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_lines_not_carriage_returns() -> None:
    log = io.StringIO()  # not a terminal
    assert list(progress(range(50), 50, "training", stream=log)) == list(range(50))
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # At most one line per LOG_INTERVAL_S (this run takes far less): the start and the end.
    assert 1 <= len(lines) <= 3
    assert "training" in lines[-1]
    assert "50/50" in lines[-1]


def test_terminal_redraws_in_place() -> None:
    term = _Tty()
    bar = tqdm_bar(3, "x", stream=term)
    for _ in range(3):
        bar.update()
    bar.close()
    assert "\r" in term.getvalue()  # tqdm's own in-place redraw


def test_bench_progress_is_quiet_in_a_log() -> None:
    log = io.StringIO()
    with Progress(1000, "gradfuse bench", stream=log) as bar:
        for i in range(1000):
            bar.set(f"case {i}")
            bar.update()
    assert "\r" not in log.getvalue()
    assert len(log.getvalue().splitlines()) <= 3
