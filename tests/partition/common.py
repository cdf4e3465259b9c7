"""What the partition harness's modules share: the run layout, the nodes'
addresses, and small process helpers."""
import ctypes
import os
import signal
import subprocess
import time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
PR_SET_PDEATHSIG = 1


def pdeath():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)


def mono():
    return time.monotonic_ns()


HERE = os.path.dirname(os.path.abspath(__file__))
# The repository's release build, and run dirs under its target/.
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_BIN = os.path.join(ROOT, "target", "release", "raftkv")
RUNS = os.path.join(ROOT, "target", "partition-runs")

RAFT_PORT = 7000
CLIENT_PORT = 6379


def node_ip(i):
    return "10.0.%d.2" % i
