"""A real single-node SLURM cluster on loopback for tests: munged, slurmctld and slurmd from Debian's
`slurm-wlm` and `munge` packages, with every file (key, socket, spool, state, logs, `slurm.conf`) in one
temporary directory and non-default free ports, so nothing global is touched and nothing else is stopped.

`LocalSlurm(workdir).start()` brings it up (daemons in the foreground, as children of this process);
`stop()` cancels the cluster's jobs and stops exactly the daemons it started, by their pids.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

#: The programs the cluster needs, by the Debian package that provides them.
PROGRAMS = {"munged": "munge", "slurmctld": "slurmctld (slurm-wlm)", "slurmd": "slurmd (slurm-wlm)",
            "sbatch": "slurm-client (slurm-wlm)", "squeue": "slurm-client (slurm-wlm)",
            "scancel": "slurm-client (slurm-wlm)", "sinfo": "slurm-client (slurm-wlm)"}

_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def _which(program: str) -> str | None:
    """The program's path on PATH or in an sbin directory (daemons live in /usr/sbin)."""
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(_SBIN))


def unavailable_reason() -> str | None:
    """Why a local SLURM cluster cannot run here (None when it can): missing packages, or not root."""
    missing = sorted({pkg for prog, pkg in PROGRAMS.items() if _which(prog) is None})
    if missing:
        return (f"SLURM tests need the Debian packages slurm-wlm and munge; missing: {', '.join(missing)} "
                "(apt-get install slurm-wlm munge; .ci/run installs them)")
    if os.geteuid() != 0:
        return "SLURM tests start slurmd, which must run as root"
    return None


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """One node (this host, `cpus` CPUs) in partition `partition`; `env` is what SLURM commands need."""

    def __init__(self, workdir: str | os.PathLike, *, cpus: int = 2, memory_mb: int = 8000,
                 partition: str = "debug"):
        self.dir = Path(workdir)
        self.host = socket.gethostname()
        self.cpus, self.memory_mb, self.partition = cpus, memory_mb, partition
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """This process's environment plus SLURM_CONF (what sbatch/squeue/scancel and dask-jobqueue need)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> LocalSlurm:
        """Write the key and slurm.conf, start munged, slurmctld and slurmd; wait until the node is idle."""
        try:
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
            self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.host])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel every job of the cluster, then stop slurmd, slurmctld and munged (only those we started)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--partition", self.partition], env=self.env,
                           capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- queries ------------------------------------------------------------------------------------------
    def run(self, *args: str) -> str:
        """Run a SLURM client command against this cluster; its stdout (raises on failure)."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def jobs(self) -> list[dict[str, str]]:
        """The cluster's jobs that are pending or running: id, name and state, from `squeue`."""
        out = self.run("squeue", "--noheader", "--format=%i|%j|%T")
        return [dict(zip(("id", "name", "state"), line.split("|"), strict=True))
                for line in out.splitlines() if line.strip()]

    def running_jobs(self) -> list[dict[str, str]]:
        """The jobs in state RUNNING."""
        return [j for j in self.jobs() if j["state"] == "RUNNING"]

    def daemon_pids(self) -> dict[str, int]:
        """name -> pid of the daemons this cluster started."""
        return {name: p.pid for name, p in self.procs.items()}

    # --- internals ----------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str | None]) -> None:
        log = open(self.dir / f"{name}.out", "ab")  # noqa: SIM115  (the daemon owns it until it exits)
        self.procs[name] = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
        log.close()
        time.sleep(0.2)
        if self.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited at start: {(self.dir / f'{name}.out').read_text()[-2000:]}")

    def _start_munge(self) -> None:
        """munged on a private socket with a fresh key (run as root, all files in the temp directory)."""
        mdir = self.dir / "munge"
        mdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        os.chmod(mdir, 0o700)
        key = mdir / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        self._spawn("munged", [_which("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={mdir / 'munged.pid'}",
                               f"--log-file={mdir / 'munged.log'}", f"--seed-file={mdir / 'munged.seed'}"])
        deadline = time.time() + 20
        while not self.munge_socket.exists():
            if time.time() > deadline or self.procs["munged"].poll() is not None:
                raise RuntimeError(f"munged did not start: {(mdir / 'munged.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def _write_conf(self) -> None:
        d = self.dir
        (d / "spool").mkdir(exist_ok=True)
        (d / "state").mkdir(exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=local",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            "SlurmUser=root",
            "SlurmdUser=root",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1",
            "MessageTimeout=10",
            "KillWait=2",
            "InactiveLimit=0",
            "MinJobAge=2",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'slurmd.log'}",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
            "State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(self.dir / f'{name}.out').read_text()[-2000:]}")
            res = subprocess.run(["sinfo", "--noheader", "--format=%T"], env=self.env, capture_output=True,
                                 text=True, timeout=30)
            state = res.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"the SLURM node did not become idle in {timeout:.0f} s (state {state!r}); "
                           f"see {self.dir}/slurmctld.log and slurmd.log")
