"""A certificate made at run time for the local services (``trustme``): https on 127.0.0.1 with a
CA that exists only for this run."""
from __future__ import annotations

from pathlib import Path


def make_certificates(directory: str | Path) -> tuple[str, str]:
    """Write a fresh CA and a server certificate for 127.0.0.1 / localhost into ``directory``.

    Returns ``(ca_pem, server_pem)``: the CA for clients to trust, and the server's key and
    certificate chain in one PEM file."""
    try:
        import trustme
    except ImportError:
        raise RuntimeError("TLS for the local services needs trustme: pip install 'pillpipe[real]'") from None
    directory = Path(directory)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, server_pem = directory / "ca.pem", directory / "server.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    server.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    return str(ca_pem), str(server_pem)
