"""``mqlflow shell``'s mongosh argument list (no mongosh started here; the end-to-end runs
are in test_svc_mongosh.py and test_seed_tour.py)."""

from __future__ import annotations

import subprocess
import sys

from svc_helpers import ROOT

from service.cli import _parser
from service.shell import GET_PROCESSOR_SNIPPET, build_argv


def argv(*args: str) -> list[str]:
    return build_argv("/bin/mongosh", _parser().parse_args(["shell", *args]))


def test_interactive_session_gets_the_snippet_then_stays() -> None:
    assert argv() == ["/bin/mongosh", "mongodb://127.0.0.1:27117/", "--eval", GET_PROCESSOR_SNIPPET, "--shell"]


def test_files_and_credentials_are_separate_arguments() -> None:
    assert argv("--host", "::1", "--port", "27999", "-u", "al ice", "--", "--quiet", "--file", "a b.js") == [
        "/bin/mongosh", "mongodb://[::1]:27999/", "--username", "al ice", "--authenticationMechanism", "SCRAM-SHA-256",
        "--eval", GET_PROCESSOR_SNIPPET, "--quiet", "--file", "a b.js",
    ]


def test_missing_mongosh_is_a_clear_error() -> None:
    r = subprocess.run([sys.executable, "-m", "service", "shell", "--mongosh", "/nonexistent/mongosh"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "mqlflow shell: --mongosh /nonexistent/mongosh is not an executable file\n")
