"""Fixtures of the model tests. ``postgres_server``: a throwaway PostgreSQL server: initdb into a fresh temporary directory,
listen on a free local port with the unix socket in that directory, stop and delete
it at the end. initdb refuses to run as root, so as root the server runs as ``nobody``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

import pytest


def find_bin_dir() -> str | None:
    """Where initdb, pg_ctl and postgres are: $FASTLSTM_PG_BIN, PATH, or the newest /usr/lib/postgresql/*/bin."""
    candidates = [os.environ.get("FASTLSTM_PG_BIN", "")]
    on_path = shutil.which("initdb")
    candidates.append(os.path.dirname(os.path.realpath(on_path)) if on_path else "")
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for d in candidates:
        if d and all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        self.dir = tempfile.mkdtemp(prefix="fastlstm-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        self._as = []
        if os.geteuid() == 0:
            os.chown(self.dir, 65534, 65534)  # nobody
            runuser = shutil.which("runuser")
            self._as = [runuser, "-u", "nobody", "--"] if runuser else None
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-o", opts, "-w", "start")

    def _run(self, binary: str, *args: str) -> None:
        cmd = [os.path.join(self.bin_dir, binary), *args]
        if self._as is None:  # root without runuser
            cmd = ["su", "-s", "/bin/sh", "nobody", "-c", " ".join(f"'{a}'" for a in cmd)]
        else:
            cmd = self._as + cmd
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.dir} port={self.port} user=postgres dbname={dbname}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """One server for the session; skipped (with the reason) only where the binaries are absent."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: set FASTLSTM_PG_BIN "
                    "or install postgresql")
    server = PostgresServer(bin_dir)
    try:
        yield server
    finally:
        server.stop()
