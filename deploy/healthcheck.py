"""Container health check for Modelyard: exit 0 when the gateway answers 200, else 1.

Used by the Dockerfile's HEALTHCHECK and by exec probes where the gateway listens on
127.0.0.1 only (the sidecar), which the kubelet's httpGet probes cannot reach.
Standard library only, so it runs in the slim image with `python -I`.

    python -I healthcheck.py [URL]     # default $MODELYARD_HEALTHCHECK_URL, else
                                       # http://127.0.0.1:8080/healthz
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080/healthz"


def check(url: str, timeout_s: float = 2.0) -> int:
    """Return the process exit status for one probe of `url`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        sys.stderr.write(f"healthcheck {url}: {exc}\n")
        return 1


def main(argv: list[str]) -> int:
    url = argv[0] if argv else os.environ.get("MODELYARD_HEALTHCHECK_URL", DEFAULT_URL)
    return check(url)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
