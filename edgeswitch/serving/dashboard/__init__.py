"""`edgeswitch dashboard`: a local web page over a decision log, updated live while `classify`
or `watch` writes it. Modules:

- view: `LogView`, the page's figures read from the log (read-only, through the decision
  log's own reader, which refuses other databases) and from `watch --events`;
- app: `create_dashboard(...)`, the FastAPI app: `GET /` (the page), `/static/...` (its
  script and style, vendored here: the page needs no network), `GET /api/summary` (JSON the
  page polls every second), `GET /healthz`; bearer auth on the API when given credentials;
- static/: the page (plain JS drawing inline SVG; no framework, no CDN).

Nothing here writes: the dashboard can watch a device's log without any risk to it.
"""
