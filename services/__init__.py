"""Real services the project talks to, started for real on 127.0.0.1.

Servers and launchers live here, above the shared core and beside the variants: the core never
imports them.  ``process`` starts any server as a child process on a free loopback port with a
bounded wait for readiness, and stops it by PID.
"""
