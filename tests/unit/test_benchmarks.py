"""The benchmark runner rejects unknown names and overrides a benchmark cannot take, before running anything."""

from __future__ import annotations

import pytest

from benchmarks import run


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["nope"], "unknown benchmark ['nope']"), (["parallel", "env=cartpole"], "only apply to ['bc_speed']")],
)
def test_runner_rejects_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
