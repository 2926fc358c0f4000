"""One typed run configuration: built-in defaults < config file (TOML or YAML) < command-line flags."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spxbatch.errors import ConfigError


@dataclass
class ClusterConfig:
    """Where the Dask workers come from: a local cluster, an existing scheduler, or SLURM/PBS jobs."""

    #: None: a LocalCluster on this machine; 'slurm' or 'pbs': dask-jobqueue.
    kind: str | None = None
    #: Address of an existing scheduler (tcp://host:port); overrides `kind`.
    scheduler: str | None = None
    #: Local worker processes (None: one per core).
    workers: int | None = None
    #: Number of batch jobs, '2', or an adaptive range '1:4'.
    jobs: str = "1"
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    cores: int = 1
    #: Worker processes per job (None: one single-threaded process per core, since SEP holds the GIL).
    processes: int | None = None
    memory: str = "4GB"
    #: Extra scheduler directives, e.g. ['--constraint=cpu'].
    job_extra: list[str] = field(default_factory=list)
    #: Python executable on the compute nodes (default: this interpreter).
    python: str | None = None
    #: Directory for job logs.
    log_directory: str | None = None


@dataclass
class RunConfig:
    """Everything one run depends on; saved in the run directory and in the cube's attributes."""

    catalog: str = ""
    #: The Zarr store to write (default: '<catalog stem>.zarr' in the current directory).
    output: str = ""
    #: The run directory (default: '<output>.run' beside the store).
    run_dir: str = ""
    #: 'irsa', a base URL laid out like IRSA's, 's3://bucket', or a local mirror directory.
    archive: str = "irsa"
    #: Where planning queries go when not the archive's own TAP (e.g. an S3 mirror planned by IRSA's or a
    #: private TAP service); None: the archive's.
    tap_url: str | None = None
    #: 'auto', 'range', 'cutout' or 'whole'.
    fetch: str = "auto"
    #: Bands to measure (1..6); empty: all.
    bands: list[int] = field(default_factory=list)
    #: [mjd_min, mjd_max]; empty: all times.
    time_range: list[float] = field(default_factory=list)
    #: Collections, e.g. ['spherex_qr2'] (wide) or ['spherex_qr2_deep']; empty: all.
    collections: list[str] = field(default_factory=list)
    #: Releases, e.g. ['qr2']; empty: all.
    releases: list[str] = field(default_factory=list)
    #: Catalog column names (None: found under the usual spellings).
    name_col: str | None = None
    ra_col: str | None = None
    dec_col: str | None = None
    #: Images per Dask task.
    images_per_task: int = 4
    #: Attempts per HTTP/S3 read before an image is recorded as failed, and the first backoff (s; doubles).
    fetch_attempts: int = 5
    fetch_backoff_s: float = 0.5
    #: Dask retries of a failed task (fetch errors are retried inside the task first).
    task_retries: int = 2
    #: Photometry options, by the names of `PhotometryConfig`.
    photometry: dict[str, Any] = field(default_factory=dict)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    #: Show a live progress bar.
    progress: bool = True

    def resolved(self) -> RunConfig:
        """A copy with the output and run directory filled in from the catalog name."""
        cfg = dataclasses.replace(self, cluster=dataclasses.replace(self.cluster))
        if not cfg.output:
            cfg.output = str(Path(Path(cfg.catalog).stem + ".zarr").absolute())
        if not cfg.run_dir:
            cfg.run_dir = str(Path(cfg.output).with_suffix(".run"))
        if cfg.cluster.kind and not cfg.cluster.log_directory:
            cfg.cluster.log_directory = str(Path(cfg.run_dir) / "logs")  # not slurm-*.out in the cwd
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The config as indented JSON (what the run directory and the cube attributes hold)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _merge(cfg: RunConfig, values: dict[str, Any], origin: str) -> RunConfig:
    """Apply `values` (possibly with a nested 'cluster' table) on top of `cfg`, rejecting unknown keys."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    cluster_names = {f.name for f in dataclasses.fields(ClusterConfig)}
    updates = {}
    for key, value in values.items():
        if key == "cluster":
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: 'cluster' must be a table of options")
            unknown = set(value) - cluster_names
            if unknown:
                raise ConfigError(f"{origin}: unknown cluster option(s) {sorted(unknown)}; "
                                  f"known: {sorted(cluster_names)}")
            updates["cluster"] = dataclasses.replace(cfg.cluster, **value)
        elif key == "photometry":
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: 'photometry' must be a table of options")
            updates["photometry"] = {**cfg.photometry, **value}
        elif key in names:
            updates[key] = value
        else:
            raise ConfigError(f"{origin}: unknown option {key!r}; known: {sorted(names)}")
    return dataclasses.replace(cfg, **updates)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options in a TOML (.toml) or YAML (.yaml/.yml) file, as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(text)
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
            if not isinstance(data, dict):
                raise ConfigError(f"config file {path} must hold a mapping of options")
            return data
        if path.suffix.lower() == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be parsed: {exc}") from exc
    raise ConfigError(f"config file {path}: use .toml, .yaml, .yml or .json")


def build_config(file_values: dict[str, Any] | None = None, flag_values: dict[str, Any] | None = None,
                 base: RunConfig | None = None) -> RunConfig:
    """Defaults (or `base`) < file values < flag values; flags set to None are ignored."""
    cfg = base or RunConfig()
    if file_values:
        cfg = _merge(cfg, file_values, "config file")
    if flag_values:
        flags = {k: v for k, v in flag_values.items() if v is not None}
        cluster = {k: v for k, v in flags.pop("cluster", {}).items() if v is not None}
        if cluster:
            flags["cluster"] = cluster
        cfg = _merge(cfg, flags, "command line")
    return cfg


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """The RunConfig saved by `RunConfig.to_dict` (e.g. from a run directory)."""
    return _merge(RunConfig(), values, "saved config")
