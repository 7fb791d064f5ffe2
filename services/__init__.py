"""Real services the project talks to, started for real on 127.0.0.1.

Servers and launchers live here, above the shared core and beside the variants: the core never
imports them.  ``process`` starts any server as a child process on a free loopback port with a
bounded wait for readiness, and stops it by PID.  ``server`` is our S3 subset and metadata API
(aiohttp.web, one service per process, request hints honoured); ``embedded`` starts both for a
run (``EmbeddedServices``); ``seaweed`` starts SeaweedFS, a real S3 server we did not write;
``tls`` makes a run's certificate; ``cli`` is ``pillpipe serve``.
"""
