"""The GPU check's two halves that run anywhere: the wheel set (bench/gpu_wheels.py) and the
check's refusal on a machine without CUDA (bench/gpu_check.py). The check itself runs on a GPU."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import gpu_wheels  # noqa: E402


@pytest.mark.parametrize("name", sorted(gpu_wheels.PACKAGES))
def test_the_gpu_wheels_are_the_versions_this_suite_runs(name):
    assert importlib.metadata.version(name) == gpu_wheels.PACKAGES[name]


def test_slimming_drops_only_the_matched_files_and_their_record_lines(tmp_path):
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    keep = ["bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cuda130.so"]
    keep.append("bitsandbytes/libbitsandbytes_cpu.so")
    drop = ["bitsandbytes/libbitsandbytes_cuda128.so", "bitsandbytes/libbitsandbytes_rocm72.so"]
    record = "bitsandbytes-0.50.2.dist-info/RECORD"
    with zipfile.ZipFile(wheel, "w") as z:
        for name in keep + drop:
            z.writestr(name, b"x" * 100)
        z.writestr(record, "".join(f"{n},sha256=abc,100\n" for n in keep + drop) + f"{record},,\n")
    gpu_wheels.slim(wheel, gpu_wheels.DROP["bitsandbytes"])
    with zipfile.ZipFile(wheel) as z:
        assert sorted(z.namelist()) == sorted(keep + [record])
        lines = z.read(record).decode().splitlines()
    assert [line.split(",")[0] for line in lines] == keep + [record]


def test_unsloths_web_ui_is_what_slimming_drops():
    drop = gpu_wheels.DROP["unsloth"]
    assert drop.match("studio/frontend/index.js") and not drop.match("unsloth/models/rl.py")


def test_the_gpu_check_refuses_a_machine_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    r = subprocess.run([sys.executable, "bench/gpu_check.py", "--part", "1"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "no CUDA GPU here" in r.stderr and r.stdout == ""
