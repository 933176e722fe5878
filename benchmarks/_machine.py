"""The CPU a benchmark ran on, for its printed header and its JSON.

`cpu_info()` reads `lscpu` (model name) and `/proc/cpuinfo` (flags) and reports the matrix
and vector features that decide low-precision speed: `amx_bf16` (Intel AMX tiles, bfloat16),
`avx512_bf16` (AVX-512 bfloat16 dot products), `avx512_fp16`. No framework is imported.
"""

from __future__ import annotations

import os
import platform
import subprocess

FEATURES = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_fp16", "avx512f", "avx2")


def cpu_info() -> dict:
    """`{"model_name", "cpus", "amx_bf16", "avx512_bf16", ...}` of this machine."""
    model, flags = platform.processor() or "unknown", set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "Flags":
                flags = set(value.split())
    except OSError:
        pass
    if not flags and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    flags = set(value.split())
                    break
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
    return {
        "model_name": model,
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        **{feature: feature in flags for feature in FEATURES},
    }


def cpu_line(info: dict | None = None) -> str:
    """One printable line: model, CPUs and the bfloat16-relevant features."""
    info = info or cpu_info()
    features = ", ".join(f"{f} {'yes' if info[f] else 'no'}" for f in FEATURES[:4])
    return f"CPU: {info['model_name']}, {info['cpus']} CPUs; {features}"


if __name__ == "__main__":
    print(cpu_line())
