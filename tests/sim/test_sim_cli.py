"""`spxbatch sim make --release`: the release reaches the generator; an unknown one is refused by argparse, as is
a `sim serve --faults` setting the server does not take."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from astropy.io import fits

from spxbatch.cli.exit_codes import EXIT_OK
from spxbatch.cli.main import main
from spxbatch.sim.faults import FaultConfig


def test_sim_make_release_qr3(tmp_path, capsys):
    assert main(["sim", "make", str(tmp_path), "--release", "qr3", "--npix", "32", "--n-visits", "2"]) == EXIT_OK
    assert "Simulated qr3 archive" in capsys.readouterr().out
    files = pd.read_csv(tmp_path / "truth" / "files.csv")
    present = files[files.present]
    assert len(present) > 0 and (present.layout == "R7").all() and (present.release == "qr3").all()
    with fits.open(tmp_path / present.relpath.iloc[0]) as hdul:
        assert "EPSF" in hdul and hdul[0].header["VERSION"].startswith("7.")


def test_sim_make_refuses_an_unknown_release(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sim", "make", str(tmp_path), "--release", "qr9"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_sim_serve_help_gives_fault_examples_that_the_server_takes(capsys):
    """The --faults examples in `spxbatch sim serve --help` are settings FaultConfig knows (the help said
    503=0.1, which the server refused)."""
    with pytest.raises(SystemExit):
        main(["sim", "serve", "--help"])
    examples = re.findall(r"--faults\s+(\w+)=([\d.]+)", " ".join(capsys.readouterr().out.split()))
    assert examples
    config = FaultConfig.coerce({kind: float(rate) for kind, rate in examples})
    assert config is not None


@pytest.mark.parametrize(("setting", "said"), [("503=0.1", "unknown fault settings ['503']"),
                                               ("http503", "takes KEY=VALUE, not 'http503'")])
def test_sim_serve_refuses_a_bad_fault_setting_before_serving(tmp_path, capsys, setting, said):
    """A misspelt --faults setting is bad input: exit 2, one message naming the option, no server started
    (the call returns instead of serving forever)."""
    with pytest.raises(SystemExit) as exc:
        main(["sim", "serve", str(tmp_path), "--port", "0", "--faults", setting])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--faults" in err and said in err, err
