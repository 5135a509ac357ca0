"""What runs on the remote host: exactly what the bundle ships.

Every module in this folder is stdlib-only (plus the cloudpickle the client
ships beside it) and is put in the bundle by ``bundle.worker_modules()``,
which lists this folder: a module added here ships, nothing else does.

- ``wire``: the frame format and message kinds (both sides use it).
- ``flow``: credit-based flow control of one stream of items (both sides).
- ``values``: values → the text the CLI prints, rendered on the worker.
- ``worker``: the worker process; ``reaper``: nothing the function starts outlives its call.
- ``watcher``: a process beside the worker that ends it when its client is gone and it cannot tell.
- ``raydriver`` / ``raytask``: a ``type: ray`` host's worker is a Ray driver; the task side.
"""
