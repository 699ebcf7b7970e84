"""deploy/tools.sh is idempotent: with the validators present it installs nothing."""
from __future__ import annotations

from tests.deploy.support import DEPLOY, run


def test_tools_script_is_a_no_op_when_everything_is_installed() -> None:
    result = run(["bash", str(DEPLOY / "tools.sh")])
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stderr
    assert result.stdout == ""
