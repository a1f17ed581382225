"""Progress lines on stderr for long steps: `[2/5] exporting ONNX ... done in 3.1s`."""

import sys
import time
from contextlib import contextmanager


class Steps:
    """Numbered progress lines on stderr (`[i/n] what ...`, notes, `done in Ns`); silent when quiet."""

    def __init__(self, total: int, quiet: bool = False, stream=None):
        self.total, self.done, self.quiet = total, 0, quiet
        self.stream = stream or sys.stderr

    @contextmanager
    def step(self, what: str):
        """Context manager: print `[i/n] what ...` on entry and the elapsed seconds on exit."""
        self.done += 1
        if not self.quiet:
            print(f"[{self.done}/{self.total}] {what} ...", file=self.stream, flush=True)
        t0 = time.perf_counter()
        yield
        if not self.quiet:
            print(f"      done in {time.perf_counter() - t0:.1f}s", file=self.stream, flush=True)

    def note(self, text: str):
        """An indented line under the current step (warnings, sizes, parity summaries)."""
        if not self.quiet:
            print(f"      {text}", file=self.stream, flush=True)
