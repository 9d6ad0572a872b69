"""Many hosts: two processes on this machine, joined over loopback by `jax.distributed`.

Each process runs `tests/_parallel_worker.py`, which calls `jd.parallel.initialize()`
(configured by the `JAXDIFF_*` environment variables only), samples with the batch split
over both processes' devices, gathers the global result, and compares it with the plain
one-device `jd.sample` it computes itself. Hard timeouts keep a stuck rendezvous from
hanging the suite.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np

WORKER = pathlib.Path(__file__).with_name("_parallel_worker.py")
REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_over_loopback():
    port = free_port()
    procs = []
    for pid in range(2):
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "0",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
               "JAXDIFF_COORDINATOR": f"127.0.0.1:{port}", "JAXDIFF_NUM_PROCESSES": "2",
               "JAXDIFF_PROCESS_ID": str(pid)}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), "hosts"], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + TIMEOUT_S
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
            assert p.returncode == 0 and lines, f"process failed (rc {p.returncode}):\n{stderr[-3000:]}"
            outs.append(json.loads(lines[-1][len("RESULT "):]))
    finally:
        for p in procs:  # never leave a half-joined process behind
            if p.poll() is None:
                p.kill()
                p.wait()

    assert sorted(o["process_index"] for o in outs) == [0, 1]
    for o in outs:
        assert o["multi"] is True and o["process_count"] == 2
        assert o["n_devices"] == 2 and o["n_local"] == 1  # one device per "host", a global mesh of 2
        assert o["sample_rows"] == [8]  # each process holds its half of the 16 samples
        assert o["sample_rel"] < 1e-5  # gathered global result == the one-device jd.sample
    # and both processes gathered the same global array
    np.testing.assert_array_equal(outs[0]["sample_head"], outs[1]["sample_head"])
