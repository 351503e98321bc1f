"""Shared helpers of the benchmark scripts: machine and thread description, load average and
waiting for a quiet machine, timing summaries, process memory (resident set and its high-water
mark), dataset loading, and writing JSON + Markdown results.

Nothing here imports jax or torch at module level: the scripts run cells in subprocesses that
import only the framework they measure.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
QUIET_LOAD = 1.5  # 1-minute load average under which timings are taken as representative

# glibc returns a freed block to the system only if it was mmap-ed; its default threshold grows
# with the largest block freed, after which big blocks come from the heap and stay resident.
# A fixed threshold (any value disables the growth) makes the resident set follow what the
# process holds, so the high-water mark of a step is the memory the step needed.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 20)}


# --------------------------------------------------------------------------- machine

def _meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes ({} where it does not exist)."""
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            parts = value.split()
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        pass
    return out


def memory_available() -> int:
    """Bytes the kernel says a new allocation can get without swapping (MemAvailable)."""
    info = _meminfo()
    return info.get("MemAvailable", info.get("MemFree", 0))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_names() -> list[str]:
    """Names of the accelerators jax or torch see, if either is already imported ([] on CPU)."""
    names = []
    if "jax" in sys.modules:
        import jax
        names += [f"jax:{d.device_kind}" for d in jax.devices() if d.platform != "cpu"]
    if "torch" in sys.modules:
        import torch
        if torch.cuda.is_available():
            names += [f"torch:{torch.cuda.get_device_name(i)}"
                      for i in range(torch.cuda.device_count())]
    return names


def machine_info() -> dict:
    """CPU model, cores, memory, accelerators, OS and library versions."""
    info = _meminfo()
    versions = {"python": platform.python_version()}
    for name in ("numpy", "jax", "jaxlib", "flax", "optax", "ott", "torch", "ot"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name if name != "ot" else "POT"] = getattr(module, "__version__", "?")
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_gib": round(info.get("MemTotal", 0) / 2**30, 2),
        "memory_available_gib": round(memory_available() / 2**30, 2),
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "versions": versions,
    }


def thread_info() -> dict:
    """Both frameworks' thread settings. XLA's CPU client has no query for its pool: it sizes
    its intra-op (Eigen) pool to the usable CPUs unless XLA_FLAGS says otherwise."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = os.environ.get("XLA_FLAGS", "")
    xla_threads = usable
    if "--xla_cpu_multi_thread_eigen=false" in flags:
        xla_threads = 1
    for flag in flags.split():
        if flag.lstrip("-").startswith("intra_op_parallelism_threads="):
            xla_threads = int(flag.split("=", 1)[1])
    out = {
        "os_cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "xla_intra_op_threads": xla_threads,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS",
                                            "OPENBLAS_NUM_THREADS") if k in os.environ},
    }
    if "torch" in sys.modules:
        import torch
        out["torch_num_threads"] = torch.get_num_threads()
        out["torch_num_interop_threads"] = torch.get_num_interop_threads()
    if "jax" in sys.modules:
        import jax
        out["jax_devices"] = [str(d) for d in jax.devices()]
    return out


# --------------------------------------------------------------------------- load

def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def wait_for_quiet(max_wait_s: float, threshold: float = QUIET_LOAD, poll_s: float = 60.0,
                   log: Callable[[str], None] = print) -> dict:
    """Sleep until the 1-minute load average is below `threshold`, at most `max_wait_s`.

    Returns {"waited_s", "load_at_start", "load_at_end", "quiet": bool, "threshold"}.
    """
    start, first = time.monotonic(), load_average()
    while True:
        load = load_average()
        waited = time.monotonic() - start
        if load[0] < threshold or waited >= max_wait_s:
            break
        log(f"load average {load[0]:.2f} >= {threshold}: waiting ({waited / 60:.0f} of "
            f"{max_wait_s / 60:.0f} min)")
        time.sleep(min(poll_s, max(1.0, max_wait_s - waited)))
    return {"waited_s": round(time.monotonic() - start, 1), "load_at_start": first,
            "load_at_end": load, "quiet": load[0] < threshold, "threshold": threshold}


def load_warning(before: Iterable[Sequence[float]], during: Iterable[Sequence[float]] = (),
                 own_threads: int = 0, threshold: float = QUIET_LOAD) -> str:
    """A prominent Markdown warning when other work shared the machine.

    before: load averages taken just before measuring (must be < threshold);
    during: load averages taken while / right after measuring, which include the benchmark's
      own `own_threads` busy threads (must be < threshold + own_threads).
    """
    worst_before = max((l[0] for l in before), default=0.0)
    worst_during = max((l[0] for l in during), default=0.0)
    if worst_before < threshold and worst_during < threshold + own_threads:
        return ""
    return (f"> **WARNING: the machine was busy during this run (1-minute load average "
            f"{worst_before:.2f} before measuring, up to {worst_during:.2f} while measuring with "
            f"{own_threads} threads of its own; quiet means < {threshold} before and < "
            f"{threshold + own_threads:g} during). Other processes shared the CPUs, so absolute "
            f"times are inflated and ratios are less reliable than on a quiet machine.**\n")


def busy_threads() -> int:
    """Threads a benchmark keeps busy: the usable CPUs (both frameworks default to all), or 1
    when both are limited to one thread by OMP_NUM_THREADS / XLA_FLAGS."""
    info = thread_info()
    torch_threads = int(os.environ.get("OMP_NUM_THREADS", info["cpus_usable"]))
    return max(1, min(info["cpus_usable"], max(torch_threads, info["xla_intra_op_threads"])))


# --------------------------------------------------------------------------- timing

def summarize(seconds: Sequence[float]) -> dict:
    """{"median", "min", "max", "n", "all"} of a list of durations (seconds)."""
    if not seconds:
        return {"median": None, "min": None, "max": None, "n": 0, "all": []}
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "n": len(seconds), "all": [round(s, 6) for s in seconds]}


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.1f} ms"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


# --------------------------------------------------------------------------- process memory

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_bytes() -> int:
    """This process's resident set now (VmRSS)."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark since start or the last `reset_peak_rss`
    (VmHWM; `resource.getrusage().ru_maxrss` reports the same mark but cannot be reset, and
    after fork+exec it can carry the parent's)."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident set (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- data

def load_dataset(preset: str = "baby", data_format: str = "", data_path: str = "",
                 data_name: str = "", seed: int = 2025):
    """A `recgoat_jax.data.Dataset`: the synthetic `preset`, or the files of `data_format`
    ("mmrec" | "lightgcn" | "recbole") in `data_path`."""
    from recgoat_jax.config import DataConfig

    cfg = DataConfig(preset=preset, format=data_format, path=data_path, name=data_name, seed=seed)
    try:
        from recgoat_jax.data.load import load_dataset as load
    except ImportError:  # older trees: the readers directly
        load = None
    if load is not None:
        return load(cfg)
    if not data_format:
        from recgoat_jax.data.synthetic import generate
        return generate(preset, seed=seed)
    from recgoat_jax.data import readers
    if data_format == "mmrec":
        return readers.read_mmrec(data_path, data_name or None)
    if data_format == "lightgcn":
        return readers.read_lightgcn(data_path)
    if data_format == "recbole":
        return readers.read_recbole(data_path, data_name or None, seed=seed)
    raise ValueError(f"--data-format must be mmrec, lightgcn or recbole, got {data_format!r}")


def add_data_args(parser) -> None:
    parser.add_argument("--preset", default="baby",
                        help="synthetic preset (tiny, small, baby, sports, electronics)")
    parser.add_argument("--data-format", default="", choices=["", "mmrec", "lightgcn", "recbole"],
                        help="read a dataset from files instead of the synthetic preset")
    parser.add_argument("--data-path", default="", help="folder of the --data-format files")
    parser.add_argument("--data-name", default="", help="dataset name inside the folder")


# --------------------------------------------------------------------------- output

def md_table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | os.PathLike, stem: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write <out_dir>/<stem>.json and <stem>.md; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def start_run(wait_quiet_min: float) -> dict:
    """Start of a benchmark script: wait up to `wait_quiet_min` minutes for a quiet machine (0:
    no wait) and return the load record {"before": (1, 5, 15 min), "wait": ...} that
    `finish_run` completes with "after"."""
    load = {"before": load_average()}
    if wait_quiet_min > 0:
        load["wait"] = wait_for_quiet(wait_quiet_min * 60)
        load["before"] = load_average()
    return load


def finish_run(out_dir: str | os.PathLike, stem: str, result: dict, markdown, load: dict) -> dict:
    """End of a benchmark script: record the load after the run in `load` (part of `result`),
    write <stem>.json and the page `markdown(result)`, say where, return `result`."""
    load["after"] = load_average()
    json_path, md_path = write_results(out_dir, stem, result, markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return result


def _json_default(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def run_header(title: str, meta: dict | str, load: dict | None = None) -> str:
    """The first lines of a results Markdown file: title, command, date, machine load, notes.

    meta: the result's "meta" (command, time, load, optional notes), or just the command
      string, with `load` ({"before", "after", "wait"}) given apart.
    """
    if isinstance(meta, str):
        meta = {"command": meta, "load": load}
    load = meta.get("load")
    lines = [f"# {title}\n", f"Command: `{meta['command']}`  "]
    if meta.get("time"):
        lines.append(f"Run started: {meta['time']}  ")
    if load:
        lines.append(f"Load average (1/5/15 min) before: {_fmt_load(load.get('before'))}, "
                     f"after: {_fmt_load(load.get('after'))} (includes this run's own threads)"
                     + (f"; waited {load['wait']['waited_s']:.0f} s for a quiet machine "
                        f"(quiet: {load['wait']['quiet']})" if load.get("wait") else "") + "  ")
    for note in meta.get("notes", []):
        lines.append(f"\n**Note:** {note}")
    return "\n".join(lines) + "\n"


def _fmt_load(load) -> str:
    return "-" if not load else "/".join(f"{x:.2f}" for x in load)


def command_line() -> str:
    return "python3 -m " + Path(sys.argv[0]).with_suffix("").name.join(["benchmarks.", ""]) + \
        (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else "")
