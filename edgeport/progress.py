"""Progress lines on stderr for long steps: `[2/5] exporting ONNX ... done in 3.1s`."""

import sys
import time
from contextlib import contextmanager


class Steps:
    def __init__(self, total: int, quiet: bool = False, stream=None):
        self.total, self.done, self.quiet = total, 0, quiet
        self.stream = stream or sys.stderr

    @contextmanager
    def step(self, what: str):
        self.done += 1
        if not self.quiet:
            print(f"[{self.done}/{self.total}] {what} ...", file=self.stream, flush=True)
        t0 = time.perf_counter()
        yield
        if not self.quiet:
            print(f"      done in {time.perf_counter() - t0:.1f}s", file=self.stream, flush=True)

    def note(self, text: str):
        if not self.quiet:
            print(f"      {text}", file=self.stream, flush=True)
