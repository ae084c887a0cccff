"""C4 consolidation: raw shards -> `c4-train.en_{k}.json.gz` (byte concatenation, like `cat`) and the validation
subset `c4-validation-{N}-samples.en.json.gz` (decompressed bytes == `zcat shards | head -n N`).

Every raw shard is decompressed in full first (each gzip member's CRC-32 and length checked by zlib), on a small
thread pool while the bytes are copied: a truncated or corrupt download fails here, naming the shard, instead of
failing tokenization later. The manifest records each shard's byte range and line range in the output, so
tokenization errors name the raw shard and its line.

CLI:  python -m workflow_scripts.data.c4_consolidate train --out FILE [--manifest F.sources.json] --threads N SHARD...
      python -m workflow_scripts.data.c4_consolidate validation --docs N --out FILE [--manifest F] --threads N SHARD...
"""
from __future__ import annotations

import argparse
import gzip
import logging
import os
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from workflow_scripts.core.atomic import atomic_open, write_json
from workflow_scripts.core.cli import run_main
from workflow_scripts.core.errors import PipelineInputError
from workflow_scripts.core.progress import Progress

log = logging.getLogger("c4_consolidate")
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 4 << 20
_INFLATE_MAX = 16 << 20  # output bound per inflate call: a "gzip bomb" shard cannot take the memory
# zlib's words for a bad gzip trailer
_TRAILER_ERRORS = {"incorrect data check": "CRC-32 mismatch", "incorrect length check": "length (ISIZE) mismatch"}


def check_gzip_header(path: Path) -> None:
    """Cheap check that a shard starts like a gzip file (full decoding happens when it is tokenized)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(3)
    except OSError as err:
        raise PipelineInputError(f"{path}: cannot read ({err.strerror})") from err
    if len(head) < 3 or head[:2] != _GZIP_MAGIC or head[2] != 8:
        raise PipelineInputError(f"{path}: not a gzip file (bad or missing gzip header)")


def available_cores() -> int:
    """Cores this process may run on (Slurm and taskset restrict the affinity mask, os.cpu_count() ignores it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class GzipCheck:
    """What a full decompression of one shard found: its decompressed size and lines."""

    decompressed: int
    newlines: int
    ends_with_newline: bool

    @property
    def lines(self) -> int:
        """Lines as `wc -l` would count them, plus an unterminated last line."""
        return self.newlines + (0 if self.ends_with_newline or not self.decompressed else 1)


class _GzipStream:
    """Inflates the gzip members of one file fed piece by piece (zlib checks each trailer), counting output."""

    def __init__(self) -> None:
        self.inflater = None
        self.members = self.decompressed = self.newlines = 0
        self.last = b"\n"

    def feed(self, data: bytes) -> None:
        while data:
            if self.inflater is None:
                if self.members:
                    data = data.lstrip(b"\x00")  # zero padding after a member, which gzip(1) and Python accept
                    if not data:
                        return
                self.inflater, self.members = zlib.decompressobj(wbits=31), self.members + 1
            data = self._inflate(data)

    def _inflate(self, data: bytes) -> bytes:
        """Returns the input left after the current member ended (b"" if it goes on)."""
        while True:
            out = self.inflater.decompress(data, _INFLATE_MAX)
            if out:
                self.decompressed += len(out)
                self.newlines += out.count(b"\n")
                self.last = out[-1:]
            if self.inflater.eof:
                rest, self.inflater = self.inflater.unused_data, None
                return rest
            data = self.inflater.unconsumed_tail
            if not data and len(out) < _INFLATE_MAX:  # input used up, no output pending
                return b""


def verify_gzip(path: Path) -> GzipCheck:
    """Decompress every gzip member of `path`: zlib checks each member's CRC-32 and ISIZE trailer. Any failure
    (corrupt data, a bad trailer, a file that ends inside a member) raises naming `path`."""
    check_gzip_header(path)
    stream = _GzipStream()
    try:
        with open(path, "rb", buffering=0) as handle:
            while chunk := handle.read(_CHUNK):
                stream.feed(chunk)
    except zlib.error as err:
        reason = next((v for k, v in _TRAILER_ERRORS.items() if k in str(err)), str(err))
        raise PipelineInputError(f"{path}: corrupt gzip in member {stream.members}, after "
                                 f"{stream.decompressed} decompressed bytes ({reason})") from err
    except OSError as err:
        raise PipelineInputError(f"{path}: cannot read ({err.strerror})") from err
    if stream.inflater is not None:
        raise PipelineInputError(f"{path}: truncated gzip (the file ends inside member {stream.members}, after "
                                 f"{stream.decompressed} decompressed bytes)")
    return GzipCheck(stream.decompressed, stream.newlines, stream.last == b"\n")


class ShardVerifier:
    """`verify_gzip` of every shard on a small thread pool, started at once, so that it overlaps the caller's own
    work (zlib releases the GIL while it inflates and checks). Errors come back in shard order."""

    def __init__(self, shards: Sequence[Path], workers: int):
        self.workers = max(1, min(workers, available_cores(), len(shards)))
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="verify-gzip")
        self._futures: list[Future[GzipCheck]] = [self._pool.submit(verify_gzip, s) for s in shards]

    def raise_if_failed(self) -> None:
        """Fail early: raise the error of the first finished shard that failed (the copy need not go on)."""
        for future in self._futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def result(self, index: int) -> GzipCheck:
        """The check of shard `index` (waits for it); raises its error."""
        return self._futures[index].result()

    def results(self) -> list[GzipCheck]:
        return [future.result() for future in self._futures]

    def __enter__(self) -> "ShardVerifier":
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)  # on an error, shards not started are not verified


def _line_ranges(shards: Sequence[Path], checks: Sequence[GzipCheck]) -> list[dict]:
    """Each shard's first line (1-based) and line count in the decompressed concatenation."""
    ranges, first = [], 1
    for shard, check in zip(shards, checks):
        ranges.append({"path": str(shard), "first_line": first, "lines": check.lines})
        first += check.newlines
    return ranges


def _copy_all(src, dst, shard: Path) -> int:
    """Copy one shard with a 1 MiB buffer: as fast as `cat` or faster here (measured against copy_file_range,
    sendfile and 128 KiB buffers in benchmarks/c4_pipeline.py's setting)."""
    buffer = bytearray(_CHUNK // 4)
    view = memoryview(buffer)
    copied = 0
    while count := src.readinto(buffer):
        dst.write(view[:count])
        copied += count
    if copied != os.path.getsize(shard):
        raise PipelineInputError(f"{shard}: file changed size while being copied")
    return copied


def concatenate(shards: Sequence[Path], out: Path, manifest: Path | None = None, threads: int = 0) -> int:
    """Write the byte concatenation of `shards` to `out` atomically, after every shard decompressed without error
    (verified on up to `threads` threads, 0 = every available core, while the bytes are copied); returns the bytes.

    `manifest` (optional) records each shard's byte range and line range in `out`, so that a later decoding error
    can name the raw shard (and its line).
    """
    for shard in shards:
        check_gzip_header(shard)  # a file that is no gzip at all fails before any work starts
    total = sum(os.path.getsize(s) for s in shards)
    progress, written = Progress(log, f"consolidate {out.name}", total), 0
    ranges = []
    with ShardVerifier(shards, threads or available_cores()) as verifier, atomic_open(out, "wb", buffering=0) as dst:
        for shard in shards:
            verifier.raise_if_failed()
            with open(shard, "rb", buffering=0) as src:
                size = _copy_all(src, dst, shard)
            ranges.append({"start": written, "end": written + size})
            written += size
            progress.update(written, MB=written / 1e6)
        checks = verifier.results()  # inside the atomic block: a bad shard leaves no output
    progress.update(written, force=True, MB=written / 1e6)
    log.info("verified %d shards (gzip CRC-32 and length; %d MB decompressed) on %d threads", len(shards),
             sum(c.decompressed for c in checks) // 10**6, verifier.workers)
    if manifest is not None:
        sources = [{**lines, **span} for lines, span in zip(_line_ranges(shards, checks), ranges)]
        write_json(manifest, {"output": str(out), "bytes": written, "sources": sources})
    return written


def _decompressed_chunks(shards: Sequence[Path], verifier: ShardVerifier) -> Iterator[bytes]:
    """The bytes `zcat shards` would print, in chunks; a decoding error names the shard (with the verifier's finding,
    which says what is wrong with it)."""
    for index, shard in enumerate(shards):
        verifier.raise_if_failed()
        try:
            with gzip.open(shard, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk
        except (OSError, EOFError, zlib.error) as err:
            verifier.result(index)
            raise PipelineInputError(f"{shard}: unreadable gzip ({err})") from err


def validation_subset(shards: Sequence[Path], docs: int, out: Path, manifest: Path | None = None,
                      threads: int = 0) -> int:
    """Write the first `docs` lines of the concatenated shards, gzip-compressed, atomically. Returns lines written.

    Every shard is verified in full (as `concatenate` does), also those past the first `docs` lines; `manifest`
    (optional) records the line range of each shard that the output holds lines of.
    """
    if docs <= 0:
        raise PipelineInputError(f"config c4.validation_docs must be positive, got {docs}")
    lines = 0
    progress = Progress(log, f"validation subset {out.name}", docs)
    with ShardVerifier(shards, threads or available_cores()) as verifier, atomic_open(out, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as dst:
        for chunk in _decompressed_chunks(shards, verifier):
            newlines = chunk.count(b"\n")
            if lines + newlines >= docs:
                cut, need = -1, docs - lines
                for _ in range(need):
                    cut = chunk.index(b"\n", cut + 1)
                dst.write(chunk[: cut + 1])
                lines = docs
                break
            dst.write(chunk)
            lines += newlines
            progress.update(lines, docs=lines)
        else:
            # `head -n N` on fewer lines prints them all; a file named "N samples" must hold N, so refuse.
            raise PipelineInputError(
                f"validation shards hold only {lines} complete lines, fewer than config c4.validation_docs={docs} "
                f"(shards: {shards[0]} .. {shards[-1]})"
            )
        checks = verifier.results()
    progress.update(lines, force=True, docs=lines)
    if manifest is not None:
        kept = [{**r, "lines": min(r["lines"], docs - r["first_line"] + 1)}
                for r in _line_ranges(shards, checks) if r["first_line"] <= docs]
        write_json(manifest, {"output": str(out), "lines": docs, "sources": kept})
    return lines


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    train = sub.add_parser("train", help="byte-concatenate one group of train shards")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--manifest", type=Path, help="JSON with each shard's byte and line range in --out")
    val = sub.add_parser("validation", help="first N lines of the concatenated validation shards")
    val.add_argument("--out", type=Path, required=True)
    val.add_argument("--docs", type=int, required=True)
    val.add_argument("--manifest", type=Path, help="JSON with the line range of each shard in --out")
    for command in (train, val):
        command.add_argument("--threads", type=int, required=True,
                             help="threads verifying the shards' gzip streams (0: every available core)")
        command.add_argument("shards", type=Path, nargs="+")
    return parser.parse_args(argv)


def _body(argv: Sequence[str] | None) -> None:
    args = _parse(argv)
    if args.kind == "train":
        written = concatenate(args.shards, args.out, args.manifest, args.threads)
        log.info("wrote %s: %d shards, %d bytes", args.out, len(args.shards), written)
    else:
        lines = validation_subset(args.shards, args.docs, args.out, args.manifest, args.threads)
        log.info("wrote %s: %d documents", args.out, lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
