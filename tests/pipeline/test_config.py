"""The run configuration: defaults < file < flags, unknown options refused, rerun consistency."""

import pytest

from spxbatch.errors import ConfigError
from spxbatch.pipeline.config import RunConfig, build_config, config_from_dict, read_config_file


def test_precedence_defaults_file_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('archive = "http://127.0.0.1:9"\nfetch = "range"\nbands = [1, 2]\n'
                    '[photometry]\nsnr_threshold = 3.0\n[cluster]\nworkers = 3\n')
    cfg = build_config(read_config_file(toml), {"fetch": "whole", "bands": None, "cluster": {"workers": None}})
    assert cfg.archive == "http://127.0.0.1:9"  # from the file
    assert cfg.fetch == "whole"  # the flag wins over the file
    assert cfg.bands == [1, 2]  # a flag left unset does not erase the file's value
    assert cfg.cluster.workers == 3
    assert cfg.photometry == {"snr_threshold": 3.0}
    assert RunConfig().fetch == "auto"


def test_yaml_and_unknown_keys(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("archive: irsa\nbogus: 1\n")
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        build_config(read_config_file(y))
    y.write_text("cluster:\n  nodes: 3\n")
    with pytest.raises(ConfigError, match="unknown cluster option"):
        build_config(read_config_file(y))
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("archive = [")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        read_config_file(bad)


def test_resolved_paths_and_round_trip(tmp_path):
    cfg = RunConfig(catalog=str(tmp_path / "stars.csv")).resolved()
    assert cfg.output.endswith("stars.zarr")
    assert cfg.run_dir.endswith("stars.run")
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


# --- every origin reads the same options ----------------------------------------------------------------------

#: A run directory's config.json as written before the typed sub-configs (flat keys; a real one, trimmed of
#: nothing): it must still load, resume, and compare equal to the options that made it.
SAVED_BEFORE = {
    "archive": "http://127.0.0.1:38225", "bands": [], "catalog": "/data/catalog.csv",
    "cluster": {"account": None, "cores": 1, "job_extra": [], "jobs": "1", "kind": None, "log_directory": None,
                "memory": "4GB", "processes": None, "python": None, "queue": None, "scheduler": None,
                "walltime": "01:00:00", "workers": 2},
    "collections": [], "dec_col": None, "fetch": "auto", "fetch_attempts": 5, "fetch_backoff_s": 0.5,
    "images_per_task": 4, "name_col": None, "output": "/data/cube.zarr", "photometry": {}, "progress": False,
    "ra_col": None, "releases": [], "run_dir": "/data/cube.run", "tap_url": None, "task_retries": 2,
    "time_range": []}

OPTIONS = {"archive": "http://127.0.0.1:9", "fetch": "range", "bands": [1, 2], "time_range": [60000.0, 60010.5],
           "collections": ["spherex_qr2"], "releases": ["qr2"], "name_col": "id", "tap_url": "http://t/TAP",
           "fetch_attempts": 7, "fetch_backoff_s": 0.25, "images_per_task": 2, "task_retries": 1,
           "progress": False, "photometry": {"aperture": "fixed", "fixed_radius": 2.0},
           "cluster": {"workers": 3, "kind": "slurm", "jobs": "1:4", "queue": "debug", "job_extra": ["-C cpu"]},
           "retry": {"max_retry_after_s": 30.0}, "fetch_options": {"latency_s": 0.2, "psf_source": "calibration"}}


def _check_options(cfg: RunConfig) -> None:
    assert cfg.archive == "http://127.0.0.1:9" and cfg.fetch == "range"
    assert cfg.plan.bands == (1, 2) and cfg.bands == [1, 2]
    assert cfg.plan.time_range == (60000.0, 60010.5) and cfg.plan.collections == ("spherex_qr2",)
    assert cfg.plan.releases == ("qr2",) and cfg.plan.name_col == "id" and cfg.plan.tap_url == "http://t/TAP"
    assert cfg.retry.max_attempts == 7 and cfg.retry.backoff_s == 0.25 and cfg.retry.max_retry_after_s == 30.0
    assert cfg.fetch_attempts == 7 and cfg.fetch_backoff_s == 0.25
    assert cfg.images_per_task == 2 and cfg.task_retries == 1 and cfg.progress is False
    assert cfg.photometry_config.aperture == "fixed" and cfg.photometry_config.fixed_radius == 2.0
    assert cfg.cluster.workers == 3 and cfg.cluster.kind == "slurm" and cfg.cluster.job_extra == ("-C cpu",)
    assert cfg.fetch_options.latency_s == 0.2 and cfg.fetch_options.psf_source == "calibration"


def test_every_origin_gives_the_same_config(tmp_path):
    import json

    import yaml

    toml = tmp_path / "run.toml"
    toml.write_text('archive = "http://127.0.0.1:9"\nfetch = "range"\nbands = [1, 2]\n'
                    'time_range = [60000, 60010.5]\ncollections = ["spherex_qr2"]\nreleases = ["qr2"]\n'
                    'name_col = "id"\ntap_url = "http://t/TAP"\nfetch_attempts = 7\nfetch_backoff_s = 0.25\n'
                    'images_per_task = 2\ntask_retries = 1\nprogress = false\n'
                    '[photometry]\naperture = "fixed"\nfixed_radius = 2\n'
                    '[cluster]\nworkers = 3\nkind = "slurm"\njobs = "1:4"\nqueue = "debug"\njob_extra = ["-C cpu"]\n'
                    '[retry]\nmax_retry_after_s = 30\n[fetch_options]\nlatency_s = 0.2\npsf_source = "calibration"\n')
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(OPTIONS))
    (tmp_path / "run.json").write_text(json.dumps(OPTIONS))
    configs = [build_config(read_config_file(tmp_path / name)) for name in ("run.toml", "run.yaml", "run.json")]
    configs.append(build_config(None, OPTIONS))  # flags
    configs.append(RunConfig(**OPTIONS))  # the Python API
    configs.append(RunConfig().updated(OPTIONS))
    configs.append(config_from_dict(configs[0].to_dict()))  # a run directory's saved config
    configs.append(config_from_dict(json.loads(configs[0].to_json())))  # a cube's `config` attribute
    for cfg in configs:
        _check_options(cfg)
    assert all(cfg == configs[0] for cfg in configs)


def test_a_config_saved_before_the_typed_layout_still_loads():
    cfg = config_from_dict(SAVED_BEFORE)
    assert cfg.archive == "http://127.0.0.1:38225" and cfg.cluster.workers == 2 and cfg.progress is False
    assert cfg.retry.max_attempts == 5 and cfg.retry.backoff_s == 0.5 and cfg.plan.time_range is None
    assert cfg.photometry == {} and cfg.photometry_config.aperture == "fwhm"
    assert cfg.bands == [] and cfg.time_range == [] and cfg.collections == []  # read as before
    assert config_from_dict(cfg.to_dict()) == cfg


def test_saved_layout_has_one_table_per_sub_config():
    d = RunConfig(bands=["D3", 1], photometry={"preset": "spxquery"}).to_dict()
    assert set(d) == {"catalog", "output", "run_dir", "archive", "fetch", "images_per_task", "task_retries",
                      "progress", "plan", "fetch_options", "retry", "cluster", "photometry"}
    assert d["plan"]["bands"] == [3, 1]  # 'D3' read as 3, order as given
    assert d["photometry"] == {"preset": "spxquery"}  # the options as given: the record
    assert "retry" not in d["fetch_options"] and "file_root" not in d["fetch_options"]
    assert RunConfig(photometry={"preset": "spxquery"}).photometry_config.annulus_area == 10.0


def test_every_fetch_option_is_reachable():
    import dataclasses

    from spxbatch.fetch.options import FetchOptions

    reachable = set(RunConfig().to_dict()["fetch_options"])
    assert reachable == {f.name for f in dataclasses.fields(FetchOptions)} - {"retry", "file_root", "link_sharers"}
    cfg = RunConfig(fetch_options={"cutout_group_px": 16, "multirange": False, "merge_gap_rows": 3},
                    retry={"concurrency": 2})
    task = cfg.fetch_options_for("/mirror/")
    assert task.cutout_group_px == 16 and not task.multirange and task.merge_gap_rows == 3
    assert task.retry is cfg.retry and task.retry.concurrency == 2 and task.file_root == "/mirror/"
    assert task.link_sharers == 1 and cfg.fetch_options_for(None, 8).link_sharers == 8
    with pytest.raises(ConfigError, match="link_sharers cannot be set here"):
        RunConfig(fetch_options={"link_sharers": 3})


def test_tables_update_entry_by_entry_across_origins(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[cluster]\nqueue = "regular"\n[photometry]\nsnr_threshold = 3.0\n[retry]\nbackoff_s = 2.0\n')
    cfg = build_config(read_config_file(toml), {"cluster": {"cores": 8}, "photometry": {"aperture": "fixed"},
                                                "fetch_attempts": 9})
    assert cfg.cluster.queue == "regular" and cfg.cluster.cores == 8
    assert cfg.photometry == {"snr_threshold": 3.0, "aperture": "fixed"}
    assert cfg.retry.backoff_s == 2.0 and cfg.retry.max_attempts == 9
    from spxbatch.pipeline.config import ClusterConfig

    whole = RunConfig(cluster={"queue": "a", "cores": 4}).updated({"cluster": ClusterConfig(workers=1)})
    assert whole.cluster == ClusterConfig(workers=1)  # an object replaces its table


# --- validated once, whatever the origin -------------------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    ({"fetch": "fast"}, "fetch must be auto, range, cutout or whole, not 'fast'"),
    ({"fetch": 3}, "fetch must be auto, range, cutout or whole"),
    ({"archive": 5}, "archive must be a string"),
    ({"images_per_task": 0}, "images_per_task must be at least 1"),
    ({"images_per_task": 2.5}, "images_per_task must be an integer"),
    ({"task_retries": -1}, "task_retries must be at least 0"),
    ({"progress": "yes"}, "progress must be true or false"),
    ({"bands": [7]}, "bands are 1..6 or D1..D6, not 7"),
    ({"bands": "1,2"}, "bands must be a list of integers"),
    ({"time_range": [60010, 60000]}, "time_range: MJD_MIN 60010 is after MJD_MAX 60000"),
    ({"time_range": [1]}, "time_range must be a list of 2 numbers or unset"),
    ({"collections": "spherex_qr2"}, "collections must be a list of strings"),
    ({"fetch_attempts": 0}, "fetch_attempts must be at least 1"),
    ({"fetch_backoff_s": -1}, "fetch_backoff_s must be at least 0"),
    ({"retry": {"max_attempts": "5"}}, "retry.max_attempts must be an integer"),
    ({"retry": {"stall_timeout_s": 0}}, "retry.stall_timeout_s must be more than 0"),
    ({"retry": {"patience": 1}}, "unknown retry option 'patience'"),
    ({"retry": 5}, "retry must be a table of options"),
    ({"cluster": {"workers": -1}}, "cluster.workers must be at least 1"),
    ({"cluster": {"workers": True}}, "cluster.workers must be an integer or unset"),
    ({"cluster": {"jobs": "4:1"}}, "cluster.jobs: --jobs takes a count like 2"),
    ({"cluster": {"kind": "lsf"}}, "cluster.kind must be slurm or pbs"),
    ({"cluster": {"memory": 8}}, "cluster.memory must be a string"),
    ({"fetch_options": {"psf_source": "disk"}}, "fetch_options.psf_source must be file, calibration or epsf"),
    ({"fetch_options": {"bandwidth_bps": 0}}, "fetch_options.bandwidth_bps must be more than 0"),
    ({"fetch_options": {"retry": {}}}, "fetch_options.retry cannot be set here"),
    ({"fetch_options": {"file_root": "/x"}}, "fetch_options.file_root cannot be set here"),
    ({"fetch_options": {"speed": 1}}, "unknown fetch option 'speed'"),
    ({"photometry": {"aperture": "square"}}, "photometry.aperture must be fwhm or fixed"),
    ({"photometry": {"fixed_radius": "2"}}, "photometry.fixed_radius must be a number"),
    ({"photometry": {"bad_flags": "HOT"}}, "photometry.bad_flags must be a list of strings"),
    ({"photometry": {"bad_flags": ["HOT", "COLDD"]}},
     "photometry.bad_flags: unknown flag name 'COLDD' (did you mean COLD"),
    ({"photometry": {"bad_flags": ["hot"]}}, "photometry.bad_flags: unknown flag name 'hot' (did you mean HOT"),
    ({"photometry": {"background_avoid_flags": ["SORCE"]}},
     "photometry.background_avoid_flags: unknown flag name 'SORCE' (did you mean SOURCE"),
    ({"photometry": {"extra_disqualifying_flags": ["ZZZ"]}},
     "photometry.extra_disqualifying_flags: unknown flag name 'ZZZ' (known: BLOOM, COLD,"),
    ({"photometry": {"annulus_steps": 2.5}}, "photometry.annulus_steps must be an integer"),
    ({"photometry": {"fixed_radius": -1.0}}, "aperture radii must be positive"),
    ({"photometry": {"preset": "sextractor"}}, "preset 'sextractor' is unknown"),
    ({"photometry": ["aperture"]}, "'photometry' must be a table of options"),
    ({"bands": [1], "plan": {"bands": [2]}}, "bands and plan.bands disagree"),
    ({"plan": {"band": [1]}}, "unknown plan option 'band'"),
])
@pytest.mark.parametrize("origin", ["file", "flags", "python"])
def test_bad_values_are_one_sentence_naming_the_option(options, message, origin, tmp_path):
    import json

    with pytest.raises(ConfigError) as err:
        if origin == "file":
            (tmp_path / "run.json").write_text(json.dumps(options))
            build_config(read_config_file(tmp_path / "run.json"))
        elif origin == "flags":
            build_config(None, options)
        else:
            RunConfig(**options)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_flag_names_of_either_release_are_accepted_whatever_a_file_defines():
    """QR2's and R7's flag names are all valid (a QR2 file has no BLOOM card: that name masks nothing there)."""
    cfg = RunConfig(photometry={"bad_flags": ["HOT", "BLOOM"], "background_avoid_flags": ["SOURCE", "GHOST_FPA"]})
    assert cfg.photometry_config.bad_flags == ("HOT", "BLOOM")
    assert cfg.photometry_config.background_avoid_flags == ("SOURCE", "GHOST_FPA")


def test_config_file_must_be_a_mapping(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("- archive\n- irsa\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_config_file(y)
    (tmp_path / "run.ini").write_text("x=1")
    with pytest.raises(ConfigError, match=r"use \.toml"):
        read_config_file(tmp_path / "run.ini")


def test_jobs_given_as_a_number_in_a_file(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[cluster]\nkind = 'pbs'\njobs = 2\n")
    assert build_config(read_config_file(toml)).cluster.jobs == "2"
