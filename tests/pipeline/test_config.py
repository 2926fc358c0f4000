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
