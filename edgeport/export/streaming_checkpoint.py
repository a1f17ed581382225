"""The checkpoint side of the streaming export (export/streaming.py): safetensors files memory-mapped
without reading them (SafetensorsFile), a tensor's bytes read from the file into a reused buffer
(read_tensor, Scratch) and a copied tensor's mapped pages released (release_pages), so that the process
holds about one tensor of the checkpoint at a time. Safetensors layout: an 8-byte little-endian header
length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw bytes (the format's spec,
huggingface/safetensors)."""

from __future__ import annotations

import json
import math
import mmap
import warnings
import weakref
from pathlib import Path

import torch

from edgeport.errors import EdgeportError

MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+ (uapi mman-common.h); Python 3.11 lacks it
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


class SafetensorsFile:
    """A memory-mapped .safetensors file (the documented layout: u64 little-endian header length, JSON
    header {name: {dtype, shape, data_offsets}}, then the raw row-major data).

    `tensor(name)` is a zero-copy torch view of the mapped bytes (private mapping: writes would copy
    the page, the file never changes). Raises EdgeportError on a truncated or malformed file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        try:
            n = int.from_bytes(self._map[:8], "little")
            header = json.loads(self._map[8:8 + n])
        except (ValueError, UnicodeDecodeError):
            raise EdgeportError(f"{self.path}: not a safetensors file (unreadable header)") from None
        header.pop("__metadata__", None)
        self.entries, self._base = header, 8 + n
        self._addr = torch.frombuffer(self._map, dtype=torch.uint8, count=1).data_ptr()  # where the mapping starts
        _OPEN.add(self)
        end = max((e["data_offsets"][1] for e in header.values()), default=0)
        if self._base + end > len(self._map):
            raise EdgeportError(f"{self.path}: truncated ({len(self._map)} bytes, header says {self._base + end})")

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor `name` in its stored dtype and shape, viewing the mapped file."""
        e = self.entries[name]
        dtype = _DTYPES.get(e["dtype"])
        if dtype is None:
            raise EdgeportError(f"{self.path}: tensor '{name}' has unsupported dtype {e['dtype']}")
        start, end = e["data_offsets"]
        count = (end - start) // torch.empty((), dtype=dtype).element_size()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty tensors: frombuffer warns about a zero-length buffer
            flat = torch.frombuffer(self._map, dtype=dtype, count=count, offset=self._base + start) if count \
                else torch.empty(0, dtype=dtype)
        return flat.view(e["shape"])

    def release(self, t: torch.Tensor) -> bool:
        """Drop the resident pages under `t` if it views this mapping (madvise MADV_DONTNEED: the pages
        leave this process's RSS and are read again from the file, or the page cache, when next
        touched; the file is never written). Returns whether `t` lay in this mapping."""
        pages = self._pages(t)
        if pages is None:
            return False
        self._map.madvise(mmap.MADV_DONTNEED, *pages)
        return True

    def populate(self, t: torch.Tensor) -> bool:
        """Map the pages under `t` (a view of this mapping) into this process in one call (madvise
        MADV_POPULATE_READ, Linux 5.14+): reading `t` after takes no page fault per page (a 2-D weight read
        transposed from the mapping faulted page by page ran at 0.4 GB/s at 1B; populated first, 1.6-1.8
        GB/s, faster than reading it into a buffer first, 0.8-1.4 GB/s, AMD EPYC AVX2). The pages count in
        RSS until release(t). Returns False where `t` is not in this mapping or the kernel refuses (EINVAL
        before 5.14)."""
        pages = self._pages(t)
        if pages is None:
            return False
        try:
            self._map.madvise(MADV_POPULATE_READ, *pages)
        except OSError:
            return False
        return True

    def _pages(self, t: torch.Tensor) -> tuple | None:
        """(start, length) of the whole pages under `t` in this mapping, None when `t` is empty or
        outside it."""
        start = t.data_ptr() - self._addr
        end = start + t.numel() * t.element_size()
        if t.numel() == 0 or start < 0 or end > len(self._map):
            return None
        lo = start - start % mmap.PAGESIZE
        hi = min(len(self._map), end + (-end % mmap.PAGESIZE))
        return lo, hi - lo


    def offset(self, t: torch.Tensor) -> int | None:
        """Where `t`'s bytes start in the file, when `t` is a non-empty contiguous view of this mapping;
        else None."""
        start = t.data_ptr() - self._addr
        if t.numel() == 0 or not t.is_contiguous() or start < 0 or start + t.numel() * t.element_size() > len(self._map):
            return None
        return start

    def read_into(self, offset: int, out: memoryview) -> None:
        """Fill `out` (a writable buffer) with the file's bytes from `offset`, by read(2): the kernel copies
        from the page cache, none of the mapping's pages is touched (no page faults, nothing to release).
        EdgeportError if the file ends first."""
        view = memoryview(out).cast("B")
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            got = 0
            while got < len(view):
                n = f.readinto(view[got:])
                if not n:
                    raise EdgeportError(f"{self.path}: truncated at byte {offset + got}")
                got += n


_OPEN = weakref.WeakSet()  # SafetensorsFile objects alive, for release_pages and read_tensor


def read_tensor(t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`t`'s values in `out` (contiguous, t's dtype and numel) -> `out` viewed in t's shape. When `t` views
    a mapped checkpoint, its bytes are read from the file (SafetensorsFile.read_into: a kernel copy from
    the page cache, about 3x faster here than faulting the mapped pages in and releasing them after);
    otherwise copied."""
    out = out.view(t.shape)
    for st in list(_OPEN):
        start = st.offset(t)
        if start is not None:
            st.read_into(start, out.view(-1).view(torch.uint8).numpy())
            return out
    return out.copy_(t)


def release_pages(t: torch.Tensor) -> None:
    """Drop the resident pages of a tensor viewing a memory-mapped checkpoint (SafetensorsFile.release);
    a tensor in ordinary memory is left alone."""
    for st in list(_OPEN):
        if st.release(t):
            return


def populate_pages(t: torch.Tensor) -> bool:
    """Map the pages of a contiguous tensor viewing a memory-mapped checkpoint in one call
    (SafetensorsFile.populate) -> whether it did; False for any other tensor or where the kernel cannot."""
    if not t.is_contiguous():
        return False
    return any(st.populate(t) for st in list(_OPEN) if st.offset(t) is not None)


def open_checkpoint(folder: Path) -> dict:
    """{tensor name: SafetensorsFile} over model.safetensors or the shards its index lists;
    EdgeportError for a checkpoint without safetensors weights (pytorch_model.bin needs the
    in-memory path)."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = [folder / s for s in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    else:
        raise EdgeportError(f"{folder}: --streaming needs safetensors weights (model.safetensors); "
                            "export without --streaming")
    where = {}
    for f in files:
        if not f.is_file():
            raise EdgeportError(f"{f}: weight shard listed in the index is missing")
        st = SafetensorsFile(f)
        where.update({name: st for name in st.entries})
    return where


class Scratch:
    """One reusable buffer for the copies made one tensor at a time (transposed weights, quantizer
    input slices). A fresh allocation of tens of MB is new pages each time, and faulting them in cost
    more than the copy itself (a 5632 x 2048 fp32 transpose, AMD EPYC AVX2: 39 ms into fresh memory,
    13 ms into reused memory); this buffer is faulted in once, for the largest copy."""

    def __init__(self, nbytes: int = 0):
        self.buf = torch.empty(nbytes, dtype=torch.uint8)

    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous tensor of `shape` and `dtype` in this buffer (grown when too
        small); valid until the next call."""
        n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if self.buf.numel() < n:
            self.buf = torch.empty(n, dtype=torch.uint8)
        return self.buf[:n].view(dtype).view(tuple(shape))

    def contiguous(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A row-major copy of `t` (any strides: a transposed view, a column slice) in `dtype` (default
        t's), in this buffer; valid until the next call."""
        return self.empty(t.shape, dtype or t.dtype).copy_(t)

    def transposed(self, t: torch.Tensor, staging: Scratch) -> torch.Tensor:
        """t^T of a 2-D `t`, contiguous, in this buffer, in one copy (torch's blocked transpose applies only
        to a whole contiguous destination: transposing 16 MiB row slices into column blocks ran at 0.44
        GB/s at 1B, the whole tensor at 3.4 GB/s). When `t` views a mapped checkpoint, its pages are mapped
        in one call (populate_pages), transposed from the mapping and released (release_pages); where that
        cannot be done, `t` is read whole into `staging` first (read_tensor: from the file when `t` views
        a mapped checkpoint). Valid until the next call."""
        out = self.empty((t.shape[1], t.shape[0]), t.dtype)
        if populate_pages(t):
            out.copy_(t.t())
            release_pages(t)
            return out
        return out.copy_(read_tensor(t, staging.empty(t.shape, t.dtype)).t())
