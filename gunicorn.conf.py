"""Gunicorn settings of the web process.

Gunicorn reads ``./gunicorn.conf.py`` from its working directory, so the
documented command (``gunicorn cachecampaign.wsgi -b 0.0.0.0:8083``), the
Docker image (working directory /app) and benchmarks/bench_status_load.py
all use these settings. Command-line options override them.
"""

# Threads let a worker process serve other requests while one waits on the
# database, and keep client connections alive between requests. The sync
# worker serves one request at a time and closes every connection. With
# benchmarks/bench_status_load.py on 2 shared cores during a caching run, 2
# sync workers served at most about 170 status requests/s, and 2 gthread
# workers of 4 threads about 390.
worker_class = "gthread"
threads = 4
