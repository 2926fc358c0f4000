"""One typed run configuration, validated once whatever the origin: built-in defaults < config file (TOML,
YAML or JSON) < command-line flags, or the Python API's keyword options; saved in the run directory and in
the cube's attributes.

A `RunConfig` holds frozen sub-configs: `plan` (catalog columns, which images, which TAP service),
`fetch_options` (the fetch layer's `FetchOptions`), `retry` (the `RetryPolicy` of every request), `cluster`
(where the workers come from), and the photometry options as given with their typed `photometry_config`.
Options are written as the saved config writes them: top-level keys and one table per sub-config
(`[plan]`, `[fetch_options]`, `[retry]`, `[cluster]`, `[photometry]`); the flat keys the README documents
(`bands`, `time_range`, `collections`, `releases`, `name_col`, `ra_col`, `dec_col`, `tap_url`,
`fetch_attempts`, `fetch_backoff_s`) are shorthands for entries of those tables, and stay readable as
attributes (`cfg.bands`).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from spxbatch.archive.retry import RetryPolicy
from spxbatch.errors import ConfigError
from spxbatch.fetch.options import FetchOptions
from spxbatch.fetch.store import resolve_store_dir
from spxbatch.photometry.config import PhotometryConfig, photometry_config
from spxbatch.pipeline.config_tables import ClusterConfig, PlanConfig, entry_value, photometry_value
from spxbatch.pipeline.validation import Bound, field_types, typed_value, unknown_keys

#: Fetch options a run sets itself: the retry policy from [retry], the mirror root from `archive`.
_FETCH_OPTIONS_SET_BY_THE_RUN = {"retry": "the [retry] table", "file_root": "the archive option",
                                 "link_sharers": "the run's workers and images in flight"}
#: Ranges of RunConfig's own numeric options.
_BOUNDS = {"images_per_task": Bound(1), "task_retries": Bound(0)}
#: The sub-config tables and their classes.
_TABLES: dict[str, type] = {"plan": PlanConfig, "fetch_options": FetchOptions, "retry": RetryPolicy,
                            "cluster": ClusterConfig}


class _Shorthand:
    """A flat option name kept readable as an attribute: `cfg.bands` is `cfg.plan.bands` as a list."""

    def __init__(self, table: str, entry: str):
        self.table, self.entry = table, entry

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = getattr(getattr(obj, self.table), self.entry)
        if self.entry == "time_range" and value is None:
            return []
        return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True, init=False)
class RunConfig:
    """Everything one run depends on; `RunConfig(**options)` and `cfg.updated(options)` validate whatever
    they are given (fields, tables as mappings or sub-config objects, flat shorthands)."""

    catalog: str = ""
    #: The Zarr store to write (default: '<catalog stem>.zarr' in the current directory).
    output: str = ""
    #: The run directory (default: '<output>.run' beside the store).
    run_dir: str = ""
    #: 'irsa', a base URL laid out like IRSA's, 's3://bucket', or a local mirror directory.
    archive: str = "irsa"
    #: How pixels are read: 'auto' (a cost model picks per image), 'range', 'cutout' or 'whole'.
    fetch: Literal["auto", "range", "cutout", "whole"] = "auto"
    #: Images per task.
    images_per_task: int = 4
    #: Retries of a failed task (fetch errors are retried inside the task first).
    task_retries: int = 2
    #: Show a live progress bar.
    progress: bool = True
    plan: PlanConfig = field(default_factory=PlanConfig)
    #: The fetch layer's options (cost model, cutouts, calibration, PSF source, multi-range requests);
    #: tasks get them with the run's retry policy and, for a local mirror, its root.
    fetch_options: FetchOptions = field(default_factory=FetchOptions)
    #: How every request to the archive is retried (file reads, calibration, cutouts, TAP).
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    #: Photometry options as given, by the names of `PhotometryConfig` ('preset': 'spxquery' too).
    photometry: dict[str, Any] = field(default_factory=dict)
    #: The typed photometry configuration those options make (built, and so checked, once).
    photometry_config: PhotometryConfig = field(init=False, repr=False, compare=False)

    bands = _Shorthand("plan", "bands")
    time_range = _Shorthand("plan", "time_range")
    collections = _Shorthand("plan", "collections")
    releases = _Shorthand("plan", "releases")
    name_col = _Shorthand("plan", "name_col")
    ra_col = _Shorthand("plan", "ra_col")
    dec_col = _Shorthand("plan", "dec_col")
    tap_url = _Shorthand("plan", "tap_url")
    fetch_attempts = _Shorthand("retry", "max_attempts")
    fetch_backoff_s = _Shorthand("retry", "backoff_s")

    def __init__(self, **options: Any) -> None:
        self._set(_apply(_defaults(), options, "options"))

    def _set(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "photometry_config", photometry_config(self.photometry))

    def updated(self, options: Mapping[str, Any], origin: str = "options") -> RunConfig:
        """A copy with `options` applied on top (tables update entry by entry), validated; `origin` names
        where they came from in messages ('config file', 'command line', ...)."""
        new = object.__new__(RunConfig)
        new._set(_apply(_values(self), options, origin))
        return new

    def resolved(self) -> RunConfig:
        """A copy with the output and run directory filled in from the catalog name."""
        output = self.output or str(Path(Path(self.catalog).stem + ".zarr").absolute())
        run_dir = self.run_dir or str(Path(output).with_suffix(".run"))
        changes: dict[str, Any] = {"output": output, "run_dir": run_dir}
        if self.cluster.kind and not self.cluster.log_directory:
            changes["cluster"] = {"log_directory": str(Path(run_dir) / "logs")}  # not slurm-*.out in the cwd
        # the client's choice of cache folder, so that every worker of the run uses the same one
        changes["fetch_options"] = {"cache_dir": resolve_store_dir(self.fetch_options.cache_dir)}
        return self.updated(changes, "resolved paths")

    def fetch_options_for(self, file_root: str | None = None, link_sharers: int = 1) -> FetchOptions:
        """The fetch layer's options for a task: [fetch_options] with the run's retry policy, reading a
        local mirror in place below `file_root` when given, with `link_sharers` images on the link at once."""
        return dataclasses.replace(self.fetch_options, retry=self.retry, file_root=file_root,
                                   link_sharers=max(1, link_sharers))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every option, in the layout `config_from_dict` and config files read."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _SCALARS}
        for table in _TABLES:
            values = dataclasses.asdict(getattr(self, table))
            out[table] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()
                          if not (table == "fetch_options" and k in _FETCH_OPTIONS_SET_BY_THE_RUN)}
        out["photometry"] = dict(self.photometry)
        return out

    def to_json(self) -> str:
        """The config as indented JSON (what the run directory and the cube attributes hold)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


#: Flat option name -> (table, entry) it is a shorthand for.
SHORTHANDS: dict[str, tuple[str, str]] = {name: (d.table, d.entry) for name, d in vars(RunConfig).items()
                                          if isinstance(d, _Shorthand)}
_SCALARS = {f.name for f in dataclasses.fields(RunConfig) if f.init and f.name not in _TABLES} - {"photometry"}


def _defaults() -> dict[str, Any]:
    """Every init field of RunConfig at its default."""
    return {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(RunConfig) if f.init}


def _values(cfg: RunConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig) if f.init}


def _apply(base: dict[str, Any], options: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """RunConfig field values: `base` with `options` applied; every value checked, one sentence per error.

    Whole sub-config objects replace their table, mappings update it entry by entry, then flat shorthands
    update their entry (giving one entry twice, in its table and as a shorthand, with two values is refused).
    """
    if not isinstance(options, Mapping):
        raise ConfigError(f"{origin}: options must be a mapping of names to values")
    unknown_keys(options, _SCALARS | set(_TABLES) | {"photometry"} | set(SHORTHANDS), origin, "option")
    out = dict(base)
    hints = field_types(RunConfig)
    for key in sorted(_SCALARS & set(options)):
        out[key] = typed_value(hints[key], options[key], f"{origin}: {key}", _BOUNDS.get(key))
    if "photometry" in options:
        out["photometry"] = {**out["photometry"], **photometry_options(options["photometry"], origin)}
        try:
            photometry_config(out["photometry"])  # the checks between options, with the origin named
        except ConfigError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
    given: dict[tuple[str, str], Any] = {}
    for table in _TABLES:
        if table in options:
            out[table], entries = _table(table, out[table], options[table], origin)
            given.update({(table, k): v for k, v in entries.items()})
    for name in sorted(set(SHORTHANDS) & set(options)):
        table, entry = SHORTHANDS[name]
        value = entry_value(_TABLES[table], entry, options[name], f"{origin}: {name}")
        if (table, entry) in given and given[(table, entry)] != value:
            raise ConfigError(f"{origin}: {name} and {table}.{entry} disagree ({value!r} vs "
                              f"{given[(table, entry)]!r}); give it once")
        out[table] = dataclasses.replace(out[table], **{entry: value})
    return out


def _table(table: str, current: Any, value: Any, origin: str) -> tuple[Any, dict[str, Any]]:
    """(the sub-config with `value` applied, the entries a mapping set) for one [table]: a sub-config object
    replaces it whole, a mapping updates it entry by entry."""
    cls = _TABLES[table]
    label = f"{origin}: {table}"
    owned = _FETCH_OPTIONS_SET_BY_THE_RUN if table == "fetch_options" else {}
    if isinstance(value, cls):
        default = cls()
        for name, owner in owned.items():
            if getattr(value, name) != getattr(default, name):
                raise ConfigError(f"{label}.{name} cannot be set here: it comes from {owner}")
        whole = {f.name: getattr(value, f.name) for f in dataclasses.fields(cls) if f.name not in owned}
        return cls(**{k: entry_value(cls, k, v, f"{label}.{k}") for k, v in whole.items()}), {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label} must be a table of options")
    for name, owner in owned.items():
        if name in value:
            raise ConfigError(f"{label}.{name} cannot be set here: it comes from {owner}")
    unknown_keys(value, {f.name for f in dataclasses.fields(cls)}, label, f"{table.removesuffix('_options')} option")
    entries = {k: entry_value(cls, k, v, f"{label}.{k}") for k, v in value.items()}
    return dataclasses.replace(current, **entries), entries


def photometry_options(value: Any, origin: str) -> dict[str, Any]:
    """Photometry options checked against PhotometryConfig's fields, types and ranges (kept as given: the
    record); the one check of photometry options, for runs and for `spxbatch qc` alike."""
    if isinstance(value, PhotometryConfig):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{origin}: 'photometry' must be a table of options")
    unknown_keys(value, set(field_types(PhotometryConfig)) | {"preset"}, f"{origin}: photometry",
                 "photometry option")
    for key, v in value.items():
        photometry_value(key, v, f"{origin}: photometry.{key}")
    return dict(value)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options in a TOML (.toml), YAML (.yaml/.yml) or JSON (.json) file, as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (UTF-8); give a TOML, YAML or JSON file") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path}: use .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be parsed: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of options")
    return data


def build_config(file_values: Mapping[str, Any] | None = None, flag_values: Mapping[str, Any] | None = None,
                 base: RunConfig | None = None, file_origin: str = "config file") -> RunConfig:
    """Defaults (or `base`) < file values < flag values; flags set to None (not given) are ignored.
    `file_origin` names the file in messages (e.g. 'config file run.toml')."""
    cfg = base or RunConfig()
    if file_values:
        cfg = cfg.updated(file_values, file_origin)
    if flag_values:
        flags = {k: v for k, v in flag_values.items() if v is not None and k != "cluster"}
        cluster = {k: v for k, v in (flag_values.get("cluster") or {}).items() if v is not None}
        if cluster:
            flags["cluster"] = cluster
        cfg = cfg.updated(flags, "command line")
    return cfg


def config_from_dict(values: Mapping[str, Any]) -> RunConfig:
    """The RunConfig saved by `RunConfig.to_dict` (a run directory's config.json, a cube's `config`
    attribute), in today's layout or the flat one of earlier versions."""
    return RunConfig().updated(values, "saved config")
