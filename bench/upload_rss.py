"""Peak RSS of the API process while it takes one large .npz upload (POST /v1/datasets), on a fresh `gradserve up`.

    .venv/bin/python bench/upload_rss.py [--mb 200]

The API's peak is its kernel high-water mark (``VmHWM`` in /proc/PID/status), read before and after the
upload. Before streaming uploads the body was held whole and decoded; run the same script with another
checkout's interpreter to compare (``cd /other && .venv/bin/python /this/bench/upload_rss.py``): the limits are
raised through the environment so the old code accepts the file too.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from launcher.spawn import spawn_up

GiB = 1024**3


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out + [g for k in out for g in _children(k)]


def _api_pid(root: int) -> int:
    for pid in _children(root):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"launcher" in argv and b"api" in argv:
            return pid
    raise RuntimeError("no API process under gradserve up")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(1024 * 1024):
            yield piece


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="the .npz file's size in MB (float32 inputs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n = args.mb * 1_000_000 // (16 * 4 + 8)  # 16 float32 features and one int64 label a sample
        rng = np.random.default_rng(0)
        buf = io.BytesIO()
        np.savez(buf, inputs=rng.standard_normal((n, 16), dtype=np.float32), targets=rng.integers(0, 10, n))
        path = Path(tmp) / "data.npz"
        path.write_bytes(buf.getvalue())
        del buf
        size = path.stat().st_size
        env = {
            **os.environ,
            "GRADSERVE_API_KEYS": "",
            "GRADSERVE_MAX_BODY_BYTES": str(4 * GiB),  # the old code's one cap on a body
            "GRADSERVE_MAX_UPLOAD_BYTES": str(4 * GiB),
            "GRADSERVE_MAX_DATASET_BYTES": str(4 * GiB),
            "GRADSERVE_MAX_DATASET_ELEMENTS": str(10**9),
        }
        up = spawn_up(Path(tmp) / "stack", workers=1, session_workers=1, env=env)
        try:
            api = _api_pid(up.proc.pid)
            idle = _status_kib(api, "VmHWM")
            started = time.perf_counter()
            with httpx.Client(base_url=up.url, timeout=600) as client:
                answer = client.post(
                    "/v1/datasets", content=_file_chunks(path), headers={"Content-Type": "application/octet-stream"}
                )
            took = time.perf_counter() - started
            assert answer.status_code == 201, answer.text[:500]
            peak = _status_kib(api, "VmHWM")
            print(f"upload: {size / 1e6:.0f} MB .npz ({n:,} samples), {took:.1f} s, answer {answer.status_code}")
            print(f"API peak RSS: {idle / 1024:.0f} MiB before the upload, {peak / 1024:.0f} MiB after")
            print(f"API peak RSS growth: {(peak - idle) / 1024:.0f} MiB for a {size / 2**20:.0f} MiB file")
        finally:
            up.proc.send_signal(signal.SIGTERM)
            up.proc.wait(timeout=60)


if __name__ == "__main__":
    main()
