"""The simulated archive's TAP service without HTTP: IRSA-named tables in SQLite, queried in real ADQL.

- `geometry`: regions on the sphere (Point, Circle, Polygon) and the ADQL predicates CONTAINS, INTERSECTS,
  AREA, computed on unit vectors: the simulator's own sky geometry, an independent check of the package's;
- `notation`: geometry as text (pgSphere in SQL, STC-S in obscore) and as DALI arrays (in results);
- `functions`: the pgSphere-like calls queryparser's translation emits, registered as SQLite functions;
- `schema`: the `spherex.plane/artifact/observation/obscore` tables, built from a header index;
- `engine`: ADQL -> SQL (queryparser), run on SQLite with MAXREC and TAP_UPLOAD tables;
- `votable`: the wire formats (result VOTable, CSV, the TAP error document, uploaded VOTables);
- `request`: one TAP request's parameters (REQUEST, LANG, QUERY, MAXREC, FORMAT, UPLOAD) answered.
The HTTP side (sync and UWS async endpoints) is `spxbatch.sim.server`.
"""
