"""Time loading a real-size Wan 2.2 T2V A14B expert file into fp8 storage (issue 9).

Writes a full-size fp16 DiT file in the real key layout (the ComfyUI *_14B_fp16.safetensors
is 28.6 GB; layout: src/wanlora/models/layouts/dit_wan22_t2v_a14b_expert.json) filled with
random values, then times, each in a fresh process, cold (page cache evicted) then warm:

    raw-read  the whole file read sequentially in 64 MiB chunks: the disk bound
    load      wanlora.models.dit.load_dit(path, dtype=torch.float8_e4m3fn, device=DEVICE)

with peak host memory (VmRSS, which counts the mmapped file's pages, and RssAnon, the memory
the process allocated itself; sampled every 20 ms) and the GPU memory allocated after load.
ru_maxrss can include the parent's RSS at spawn (Linux keeps the max across fork + exec).
The load child also checks a few loaded tensors bit for bit against the file's values
rounded to fp8 on the CPU.

    python benchmarks/bench_load.py --dir DIR --out OUT               # the 14B expert
    python benchmarks/bench_load.py --dir DIR --out OUT --layers 1 --device cpu  # smoke run

The file is kept (and reused when its size is right) unless --delete.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime
import json
import math
import mmap
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = ROOT / "src" / "wanlora" / "models" / "layouts" / "dit_wan22_t2v_a14b_expert.json"
CHUNK = 64 * 2**20  # raw-read chunk and the random pool the writer cycles through
FULL_LAYERS = 40
DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}
MODES = ("raw-read", "load")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


# ---------------------------------------------------------------- the file


def expert_layout(layers: int | None = None) -> dict[str, list[int]]:
    """name -> shape of the 14B expert; `layers` keeps blocks 0..layers-1 (and the rest)."""
    tensors = json.loads(LAYOUT.read_text())["tensors"]
    if layers is None:
        return tensors
    return {
        n: s for n, s in tensors.items() if not (m := _BLOCK.match(n)) or int(m.group(1)) < layers
    }


def safetensors_header(layout: dict[str, list[int]], dtype: torch.dtype) -> tuple[bytes, int]:
    """The 8-byte length + JSON header (space-padded to a multiple of 8), and the data size."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    entries: dict[str, dict] = {"__metadata__": {}}
    offset = 0
    for name, shape in layout.items():
        end = offset + math.prod(shape) * itemsize
        entries[name] = {
            "dtype": DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, end],
        }
        offset = end
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, offset


def expected_size(layout: dict[str, list[int]], dtype: torch.dtype = torch.float16) -> int:
    header, data = safetensors_header(layout, dtype)
    return len(header) + data


def _random_pool(dtype: torch.dtype, nbytes: int = CHUNK, seed: int = 0) -> memoryview:
    itemsize = torch.empty((), dtype=dtype).element_size()
    values = torch.randn(nbytes // itemsize, generator=torch.Generator().manual_seed(seed))
    pool = bytearray(nbytes)
    torch.frombuffer(pool, dtype=torch.uint8).copy_((values * 0.02).to(dtype).view(torch.uint8))
    return memoryview(pool)


def write_dit_file(
    path: str | Path, layout: dict[str, list[int]], dtype: torch.dtype = torch.float16
) -> Path:
    """Stream a .safetensors with `layout` (in its order) of random values; atomic rename.

    The data cycles through one 64 MiB random pool, so writing is disk-bound.
    """
    from wanlora.fsutil import atomic_path

    path = Path(path)
    header, _ = safetensors_header(layout, dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    pool = _random_pool(dtype)
    pos = 0  # where the next tensor starts in the pool
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=0) as f:
        f.write(header)
        for shape in layout.values():
            left = math.prod(shape) * itemsize
            while left:
                n = min(left, len(pool) - pos)
                f.write(pool[pos : pos + n])
                pos = (pos + n) % len(pool)
                left -= n
    return path


def verify_file(path: Path, layout: dict[str, list[int]]) -> int:
    """Open with safetensors and check the key set and shapes; returns the key count."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        keys = list(f.keys())
        if set(keys) != set(layout):
            raise RuntimeError(f"{path}: {len(keys)} keys, expected {len(layout)}")
        for name in (keys[0], keys[-1]):
            if list(f.get_slice(name).get_shape()) != list(layout[name]):
                raise RuntimeError(f"{path}: {name} has the wrong shape")
    return len(keys)


# ---------------------------------------------------------------- page cache


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (no root needed; dirty pages synced first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def resident_fraction(path: Path) -> float | None:
    """Share of the file's pages in the page cache (mincore; touches no page). None if unknown."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.mmap.argtypes += [ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        size = path.stat().st_size
        pages = -(-size // mmap.PAGESIZE)
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        finally:
            os.close(fd)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            vec = ctypes.create_string_buffer(pages)
            if libc.mincore(addr, size, vec) != 0:
                return None
            resident = pages - vec.raw[:pages].count(0)  # low bit set = resident
        finally:
            libc.munmap(addr, size)
        return resident / pages
    except (OSError, AttributeError):
        return None


# ---------------------------------------------------------------- measurements (children)


class PeakMemory:
    """Max VmRSS and RssAnon of this process, sampled every `interval` s in a thread."""

    FIELDS = ("VmRSS", "RssAnon")

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = dict.fromkeys(self.FIELDS, 0)
        self.start = self.read()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def read(cls) -> dict[str, int]:
        """The fields of /proc/self/status, in bytes (0 where unavailable)."""
        values = dict.fromkeys(cls.FIELDS, 0)
        with contextlib.suppress(OSError), open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0]) * 1024
        return values

    def _sample(self) -> None:
        for key, value in self.read().items():
            self.peak[key] = max(self.peak[key], value)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def report(self) -> dict[str, float]:
        gib = 2**30
        return {
            "vmrss_start_gib": self.start["VmRSS"] / gib,
            "rssanon_start_gib": self.start["RssAnon"] / gib,
            "vmrss_peak_gib": self.peak["VmRSS"] / gib,
            "rssanon_peak_gib": self.peak["RssAnon"] / gib,
            # Linux reports ru_maxrss in KiB
            "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / gib,
        }


def measure_raw_read(path: str | Path, chunk: int = CHUNK) -> dict:
    """Read the whole file sequentially into one reusable buffer: the disk's rate."""
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    total = 0
    with PeakMemory() as memory:
        start = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                total += n
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": total, "gbps": total / seconds / 1e9, **memory.report()}


def measure_load(path: str | Path, device: str) -> dict:
    """load_dit into fp8 storage on `device`; seconds include the final synchronise."""
    t0 = time.perf_counter()
    from wanlora.models.dit import load_dit

    import_s = time.perf_counter() - t0
    device = torch.device(device)
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    if cuda:  # the CUDA context is not part of loading
        torch.zeros(1, device=device)
        torch.cuda.synchronize(device)
    init_s = time.perf_counter() - t0
    size = Path(path).stat().st_size
    with PeakMemory() as memory:
        start = time.perf_counter()
        model, info = load_dit(path, dtype=torch.float8_e4m3fn, device=device)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    weight = model.blocks[0].attn1.to_q.weight
    return {
        "bit_identical": _same_as_cpu_rounding(path, model),
        "seconds": seconds,
        "bytes": size,
        "gbps": size / seconds / 1e9,
        "import_s": import_s,
        "cuda_init_s": init_s,
        "num_layers": info.num_layers,
        "params": sum(p.numel() for p in model.parameters()),
        "model_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30,
        "gpu_allocated_gib": torch.cuda.memory_allocated(device) / 2**30 if cuda else 0.0,
        "fp8_ok": weight.dtype == torch.float8_e4m3fn and weight.device.type == device.type,
        **memory.report(),
    }


def _same_as_cpu_rounding(path: str | Path, model) -> bool:
    """A few loaded tensors equal the file's values rounded to fp8 on the CPU, bit for bit."""
    from safetensors import safe_open

    from wanlora.models.dit import wan_key_to_diffusers

    params = dict(model.named_parameters())
    names = ("blocks.0.self_attn.q.weight", "blocks.0.ffn.2.bias", "time_embedding.0.weight")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for name in names:
            loaded = params[wan_key_to_diffusers(name)].detach().cpu()
            expected = f.get_tensor(name).to(torch.float8_e4m3fn).to(loaded.dtype)
            if not torch.equal(loaded.view(torch.uint8), expected.view(torch.uint8)):
                return False
    return True


def run_child(mode: str, path: Path, device: str) -> dict:
    if mode == "raw-read":
        return measure_raw_read(path)
    if mode == "load":
        return measure_load(path, device)
    raise ValueError(f"unknown mode {mode}")


# ---------------------------------------------------------------- driver


def _measure(mode: str, cache: str, path: Path, device: str, timeout: int, out: Path) -> dict:
    if cache == "cold":
        evict(path)
    before = resident_fraction(path)
    cmd = [sys.executable, __file__, "--child", mode, "--file", str(path), "--device", device]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        log = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        parts = [x.decode() if isinstance(x, bytes) else x for x in (exc.stdout, exc.stderr)]
        log = "".join(x or "" for x in parts) + f"\nTIMEOUT after {timeout} s"
    (out / f"{mode}-{cache}.log").write_text(log)
    line = next((ln for ln in log.splitlines() if ln.startswith("RESULT ")), None)
    result = json.loads(line[7:]) if line else {"error": log.strip()[-400:]}
    result.update(mode=mode, cache=cache, resident_before=before)
    result["process_s"] = time.perf_counter() - t0
    return result


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict]) -> str:
    lines = [
        "| mode | cache | in page cache before | s | GB/s (file) | peak VmRSS GiB "
        "| peak RssAnon GiB (start) | ru_maxrss GiB | GPU allocated GiB | fp8 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        head = f"| {r['mode']} | {r['cache']} | {_fmt(r.get('resident_before'), '.0%')} |"
        if "error" in r:
            lines.append(f"{head} FAILED: {r['error'][-100:]!r} | | | | | | |")
            continue
        fp8 = {True: "yes", False: "NO"}.get(r.get("fp8_ok"), "-")
        fp8 += {True: ", bit-identical", False: ", VALUES DIFFER"}.get(r.get("bit_identical"), "")
        lines.append(
            f"{head} {r['seconds']:.2f} | {r['gbps']:.2f} | {r['vmrss_peak_gib']:.2f} | "
            f"{r['rssanon_peak_gib']:.2f} ({r['rssanon_start_gib']:.2f}) | "
            f"{r['ru_maxrss_gib']:.2f} | {_fmt(r.get('gpu_allocated_gib'), '.2f')} | {fp8} |"
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("diffusers", "safetensors"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "?"
    return versions


def _mem_total_gib() -> float | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, help="where the DiT file is written (and kept)")
    p.add_argument("--out", type=Path, help="results.json, table.md and the children's logs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", type=int, default=FULL_LAYERS, help="write blocks 0..N-1 only")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: raw-read,load")
    p.add_argument("--rewrite", action="store_true", help="write the file even if it exists")
    p.add_argument("--delete", action="store_true", help="remove the file at the end")
    p.add_argument("--timeout", type=int, default=600, help="seconds per measurement")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        result = run_child(args.child, args.file, args.device)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if args.dir is None or args.out is None:
        p.error("--dir and --out are required")
    if not 1 <= args.layers <= FULL_LAYERS:
        p.error(f"--layers must be 1..{FULL_LAYERS}")
    modes = [m for m in args.modes.split(",") if m]
    if bad := set(modes) - set(MODES):
        p.error(f"unknown modes {sorted(bad)}")

    layout = expert_layout(args.layers)
    size = expected_size(layout)
    suffix = "" if args.layers == FULL_LAYERS else f"_{args.layers}layers"
    path = args.dir / f"wan2.2_t2v_14B_fp16_random{suffix}.safetensors"
    args.dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cmd": " ".join([sys.executable, *sys.argv]),
        "device": args.device,
        "device_name": torch.cuda.get_device_name(args.device) if "cuda" in args.device else "cpu",
        **_versions(),
        "cpus": os.cpu_count(),
        "host_ram_gib": _mem_total_gib(),
        "file": str(path),
        "layers": args.layers,
        "tensors": len(layout),
        "file_bytes": size,
    }
    print(f"file {path}: {len(layout)} tensors, {size / 1e9:.2f} GB", flush=True)

    if not args.rewrite and path.exists() and path.stat().st_size == size:
        meta["write"] = "reused"
    else:
        free = shutil.disk_usage(args.dir).free
        if free < size + 2**30:
            sys.exit(f"{args.dir}: {free / 1e9:.1f} GB free, the file needs {size / 1e9:.1f} GB")
        start = time.perf_counter()
        write_dit_file(path, layout)
        seconds = time.perf_counter() - start
        meta["write"] = {"seconds": seconds, "gbps": size / seconds / 1e9}
        print(f"wrote in {seconds:.1f} s ({size / seconds / 1e9:.2f} GB/s)", flush=True)
    if path.stat().st_size != size:
        sys.exit(f"{path} is {path.stat().st_size} bytes, expected {size}")
    meta["keys_verified"] = verify_file(path, layout)
    meta["free_disk_gb"] = shutil.disk_usage(args.dir).free / 1e9
    evict(path)
    meta["resident_after_evict"] = resident_fraction(path)
    print(f"after eviction {_fmt(meta['resident_after_evict'], '.1%')} in page cache", flush=True)

    results = []
    for mode in modes:
        for cache in ("cold", "warm"):
            result = _measure(mode, cache, path, args.device, args.timeout, args.out)
            results.append(result)
            shown = {k: v for k, v in result.items() if not k.endswith("_start_gib")}
            print(json.dumps(shown), flush=True)
            # after each measurement: a later timeout keeps what finished
            (args.out / "results.json").write_text(
                json.dumps({"meta": meta, "results": results}, indent=1)
            )
    summary = table(results)
    meta_line = (
        f"{meta['device_name']}; torch {meta['torch']}, diffusers {meta['diffusers']}, "
        f"safetensors {meta['safetensors']}; {meta['date']}; file {size / 1e9:.2f} GB "
        f"({meta['layers']} layers, {len(layout)} tensors), free disk {meta['free_disk_gb']:.0f} GB"
    )
    (args.out / "table.md").write_text(f"{meta_line}\n\n{summary}\n")
    print(meta_line)
    print(summary)
    if args.delete:
        path.unlink()
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
