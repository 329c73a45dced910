"""The cloud model as an HTTP server (FastAPI for the app, uvicorn to run it). Modules:

- app: `create_app(model, ...)`, composing the parts below into one FastAPI app;
- state: `ServingState`, what routes and handlers share, on `app.state` (`get_state(request)`);
- routes.native / routes.openai / routes.ops: `/v1/classify`; the OpenAI chat subset and
  `/v1/models`; `/healthz` and `/metrics`;
- middleware: pure-ASGI request metrics, bearer auth, JSON content type, body size limit;
- credentials: which device a bearer token is (a hashed device token file, reloaded on change);
- access_log: one line per request naming the device (`serve-cloud --access-log`);
- errors: the exception handlers, registered in one place (`register_handlers(app)`);
- responses: the OpenAI-style JSON error body;
- inference: one request's model run, checked, with faults and backend failures answered;
- faults: `Fault` (`--fault KIND[:SECONDS][@RATE]`) and the injector;
- batcher: dynamic batching of concurrent requests into one model run;
- metrics: the Prometheus metrics;
- server: run an app under uvicorn, here (`serve`) or as a child process (`ServerProcess`).

Nothing is imported here, so `serving.server` and `serving.metrics` work without FastAPI.
"""
