"""README.md's `results.json` tables and the code agree: the top-level keys, and the checkpoint columns of a job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from testbed.cache import content_hash
from testbed.pipeline import run
from testbed.results import _NOT_HASHED, OPTIONAL_KEYS, TOP_LEVEL_KEYS, ResultsFile, config_hash
from tests.conftest import make_cfg

README = Path(__file__).resolve().parents[2] / "README.md"
# README checkpoint columns that a discrete-action CartPole job cannot have.
CONTINUOUS_ONLY = {"drift/action_abs_diff/<probe>", "memory/probe_r2"}  # Box actions; a continuous hidden state


def readme_tables(section: str) -> list[list[str]]:
    """The first cells of each table in README.md's `## <section>` (up to the next `#` heading), one list a table."""
    text = README.read_text().split(f"\n## {section}\n", 1)[1]
    text = re.split(r"\n#+ ", text, maxsplit=1)[0]
    tables: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("|"):
            tables[-1].append(line.split("|")[1].strip())
        elif tables[-1]:
            tables.append([])
    return [rows[2:] for rows in tables if rows]  # no header, no |---| line


def names(cells: list[str]) -> list[str]:
    """The backquoted names of table cells, `a/{b,c}` expanded to `a/b`, `a/c`."""
    found = []
    for name in (n for cell in cells for n in re.findall(r"`([^`]+)`", cell)):
        brace = re.fullmatch(r"(.*)\{(.+)\}(.*)", name)
        found += [f"{brace[1]}{part}{brace[3]}" for part in brace[2].split(",")] if brace else [name]
    return found


def family(name: str) -> re.Pattern[str]:
    """A README column name as a pattern: `<probe>`, `<group>`, ... stand for any text (groups contain `/`)."""
    return re.compile("".join(".+" if p.startswith("<") else re.escape(p) for p in re.split(r"(<[^>]+>)", name)))


def test_the_readme_lists_every_top_level_key_and_no_other() -> None:
    top_level = names(readme_tables("`results.json`")[0])
    assert len(top_level) == len(set(top_level))
    assert set(top_level) == set(TOP_LEVEL_KEYS) | set(OPTIONAL_KEYS)


def test_a_new_results_file_holds_the_top_level_keys_in_order(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path, make_cfg("env=cartpole", "debug=fast", "logger=none"))
    assert tuple(results.data) == TOP_LEVEL_KEYS
    assert results.data["status"] == "running"


def test_the_family_patterns_match_what_they_should() -> None:
    assert names(["`compute/rl/{env_steps,flops}`, `x`"]) == ["compute/rl/env_steps", "compute/rl/flops", "x"]
    weights = family("drift/weights/<group>/sparsity@<tol>")
    assert weights.fullmatch("drift/weights/actor/policy_net.0/sparsity@1e-08")
    assert not weights.fullmatch("drift/weights/actor/cosine")


@pytest.mark.slow
def test_the_readme_documents_every_checkpoint_column_of_a_job(fast_cfg, cache_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An anchored job with the BC control, and a scratchpad's and an LSTM's job probing their memory (on parity, whose
    expert needs no training), so all their columns are there too; each documented column appears, and no other."""
    documented = names(readme_tables("`results.json`")[1])
    patterns = {name: family(name) for name in documented}
    jobs = [fast_cfg("rl.anchor.kind=bc_kl", "eval.bc_control=true")]
    for kind in ("scratchpad", "lstm"):
        fast = ("debug=fast", "logger=none", f"cache_dir={cache_dir}", f"output_dir={tmp_path / kind}")
        jobs.append(make_cfg("env=parity", "env.kwargs.n=3", "eval.memory_probe=true", f"policy={kind}", *fast))
    columns = {key for cfg in jobs for row in run(cfg)["checkpoints"] for key in row}
    undocumented = {c for c in columns if not any(p.fullmatch(c) for p in patterns.values())}
    assert not undocumented, f"checkpoint columns missing from README.md: {sorted(undocumented)}"
    unused = {n for n, p in patterns.items() if not any(p.fullmatch(c) for c in columns)} - CONTINUOUS_ONLY
    assert not unused, f"README.md documents checkpoint columns no job writes: {sorted(unused)}"


def test_a_setting_at_its_neutral_value_hashes_as_before_it_existed() -> None:
    """Settings added after results existed (bc.checkpoints, eval.bc_control, lr_rule, eval.memory_probe, env.kwargs,
    the policy group): at their neutral values
    (what every earlier job did) they are left out of the hash, so earlier results keep their identity; any other
    value is hashed."""
    cfg = make_cfg("env=cartpole")
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    assert (data["bc"].pop("checkpoints"), data["eval"].pop("bc_control"), data.pop("lr_rule")) == ([], False, "fixed")
    assert (data["eval"].pop("memory_probe"), data["env"].pop("kwargs"), data.pop("policy")["kind"]) == (
        False,
        {},
        "mlp",
    )
    assert config_hash(cfg) == content_hash({k: v for k, v in data.items() if k not in _NOT_HASHED})
    for setting in (
        "bc.checkpoints=[500]",
        "eval.bc_control=true",
        "lr_rule=width",
        "eval.memory_probe=true",
        "policy=framestack",
        "policy.frames=3",  # a policy setting other than the kind, at the mlp kind
        "+env.kwargs.x=1",
    ):
        assert config_hash(make_cfg("env=cartpole", setting)) != config_hash(cfg), setting
