"""A throwaway PostgreSQL server on loopback for the multi-machine tests (Debian's ``postgresql``).

``start()`` finds ``initdb``/``pg_ctl`` (installing the ``postgresql`` package with apt-get when they
are missing and we are root), creates a cluster in a temp dir owned by the ``postgres`` user, starts
it on a free port bound to 127.0.0.1 and creates a database; ``stop()`` stops it and removes the dir.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _bin_dir() -> Path | None:
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(cand, "initdb")) and os.path.exists(os.path.join(cand, "pg_ctl")):
            return Path(cand)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def ensure_installed() -> Path:
    bindir = _bin_dir()
    if bindir is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=600)
        bindir = _bin_dir()
        if bindir is None:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False, stdout=subprocess.DEVNULL, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], env=env, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=600)
            bindir = _bin_dir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found and could not be installed "
                                  "(apt-get install -y postgresql needs root)")
    return bindir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    datadir: Path
    port: int
    run_as: str | None

    @property
    def url(self) -> str:
        return f"postgresql://edgenas@127.0.0.1:{self.port}/edgenas"

    def _cmd(self, args: list[str]) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return args

    def stop(self) -> None:
        subprocess.run(self._cmd([str(self.bindir / "pg_ctl"), "-D", str(self.datadir / "data"), "-m", "immediate",
                                  "-w", "stop"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.datadir, ignore_errors=True)


def start() -> PgServer:
    bindir = ensure_installed()
    run_as = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
    tmp = Path(tempfile.mkdtemp(prefix="edgenas-pg-"))
    os.chmod(tmp, 0o777)
    data = tmp / "data"
    srv = PgServer(bindir, tmp, free_port(), run_as)

    def run(args):
        r = subprocess.run(srv._cmd(args), capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed: {(r.stderr or r.stdout).strip()[-500:]}")

    if run_as:
        shutil.chown(tmp, user=run_as)
    run([str(bindir / "initdb"), "-D", str(data), "-U", "edgenas", "--auth=trust", "-E", "UTF8", "--no-sync"])
    opts = f"-c listen_addresses=127.0.0.1 -p {srv.port} -k {tmp} -c fsync=off -c max_connections=50"
    run([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(tmp / "log"), "-w", "-t", "60", "start"])
    run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(srv.port), "-U", "edgenas", "edgenas"])
    deadline = time.time() + 30
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", srv.port)) == 0:
                return srv
        time.sleep(0.2)
    srv.stop()
    raise PostgresUnavailable("PostgreSQL did not accept connections within 30 s")
