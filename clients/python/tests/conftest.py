"""Fixtures: real metamesh nodes on loopback, started by the tests themselves.

The binary is ``$METAMESH_BIN``, else ``$CARGO_TARGET_DIR/debug/metamesh``,
else ``<repo>/target/debug/metamesh`` (build it with
``cargo build -p metamesh-node --bin metamesh``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import pytest

from metamesh import Client

REPO = Path(__file__).resolve().parents[3]
DEADLINE = 90.0  # seconds; generous for a loaded 2-core machine

T = TypeVar("T")


def binary() -> Path:
    env = os.environ.get("METAMESH_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target / "debug" / "metamesh"


def fixtures_dir() -> Optional[Path]:
    for p in (REPO.parent / "shared" / "fixtures", Path("/work/shared/fixtures")):
        if (p / "expected.json").exists():
            return p
    return None


def wait_for(what: str, fn: Callable[[], Optional[T]], deadline: float = DEADLINE) -> T:
    """Poll ``fn`` until it returns a truthy value; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last: Optional[BaseException] = None
    while time.monotonic() < end:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # the condition may raise while not yet true
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}" + (f": {last!r}" if last else ""))


class RunningNode:
    def __init__(self, name: str, extra: List[str] = ()):  # type: ignore[assignment]
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"metamesh-py-{name}-"))
        self.log = self.dir / "node.log"
        bin_ = binary()
        if not bin_.exists():
            raise RuntimeError(f"metamesh binary not found at {bin_} (set METAMESH_BIN or build it)")
        subprocess.run([str(bin_), "--data-dir", str(self.dir), "init"], check=True, capture_output=True)
        # The node reads METAMESH_* variables as its configuration: pass none of the tests' own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("METAMESH_")}
        env.update(RUST_LOG="warn", NO_COLOR="1")
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(bin_), "--data-dir", str(self.dir), "run",
             "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", *extra],
            stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        addr_file = self.dir / "api.addr"

        def ready() -> Optional[str]:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {name} exited: {self.log.read_text(errors='replace')}")
            return addr_file.read_text().strip() if addr_file.exists() else None

        try:
            wait_for(f"node {name}'s API address", ready)
            self.client = Client.from_data_dir(self.dir, timeout=120)
            self.info = wait_for(f"node {name}'s API", self.client.node)
        except BaseException:
            self.stop()
            raise

    def dial_addr(self) -> str:
        for a in self.info.listen_addrs:
            if "/tcp/" in a and "/p2p/" in a:
                return a
        raise AssertionError(f"no dialable tcp address in {self.info.listen_addrs}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def node():
    """A lone node for this test module."""
    n = RunningNode("a")
    yield n
    n.stop()


@pytest.fixture(scope="module")
def pair():
    """Two nodes; ``b`` bootstraps from ``a``."""
    a = RunningNode("pa")
    try:
        b = RunningNode("pb", ["--bootstrap", a.dial_addr()])
    except BaseException:
        a.stop()
        raise
    yield a, b
    b.stop()
    a.stop()


@pytest.fixture
def client(node) -> Client:
    return node.client
