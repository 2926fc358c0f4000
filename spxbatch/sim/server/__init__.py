"""The simulated archive's HTTP server: IRSA's TAP (sync + UWS async), IBE file URLs with HTTP Range, and the
IBE cutout query string, over any directory of Level-2 files, with optional latency, bandwidth cap, faults.

Routes (base = `srv.url`):
- `POST|GET /TAP/sync`, `POST /TAP/async` (303 to the job), `GET|DELETE /TAP/async/{id}`,
  `GET|POST /TAP/async/{id}/phase`, `GET /TAP/async/{id}/results/result`, `GET /TAP/async/{id}/error`;
- `GET|HEAD /ibe/data/spherex/<relpath>`: the file, with single and multiple byte ranges;
- `GET /ibe/data/spherex/<relpath>?center=..&size=..[&gzip=false]`: a cutout (see `spxbatch.sim.cutout`);
- `GET|HEAD /ibe/data/spherex/<folder>[/]`: the folder's HTML listing, as IBE's directories.
The tables are built from `spxbatch.plan.index.index_directory(root)`; `root` plays IRSA's
`ibe/data/spherex/` directory, so `artifact.uri` = 'ibe/data/spherex/' + relpath and the download URL is
`srv.url + '/' + uri`, exactly as `'https://irsa.ipac.caltech.edu/' || a.uri` at IRSA.

Modules: `state` (the server's state and access log), `app` (routes), `realism` (latency, faults, the access
log around every request), `body` (streamed bodies under the bandwidth cap), `files` (Range), `cutouts`, `listing`,
`tap_routes` (TAP sync and async over `spxbatch.sim.tap`), `uws` (async jobs), `lifecycle` (start, stop), `proxy`
(the same seeded faults in front of another server, e.g. a moto S3 server).
"""

from spxbatch.sim.server.lifecycle import run_server, serve_archive
from spxbatch.sim.server.proxy import FaultProxy, serve_fault_proxy
from spxbatch.sim.server.state import ArchiveServer

__all__ = ["ArchiveServer", "FaultProxy", "run_server", "serve_archive", "serve_fault_proxy"]
