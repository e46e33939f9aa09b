"""policies/schedule.yaml: cron lines per scheduled job, refused with file:line: key: problem."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver import jobs, schedule
from archiver.cli import main
from archiver.errors import PolicyError, ScheduleError
from tests.conftest import make_env

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = {"worm-selftest": "0 */6 * * *", "disposition": "0 2 * * *"}
HOUSEKEEPING = {"seal": "every ARCHIVER_SEAL_INTERVAL seconds"}


def parse(text: str) -> schedule.Schedule:
    return schedule.from_yaml(text.encode(), "policies/schedule.yaml", DEFAULTS, HOUSEKEEPING)


def refused(text: str) -> ScheduleError:
    with pytest.raises(ScheduleError) as caught:
        parse(text)
    assert isinstance(caught.value, PolicyError) and caught.value.code == "policy-invalid"
    assert "archiver jobs list" in caught.value.hint
    return caught.value


def test_both_forms_and_defaults_for_jobs_not_named() -> None:
    got = parse('# comment\ndisposition: "30 3 * * mon-fri"\n')
    assert got.entries["disposition"] == schedule.Entry("disposition", "30 3 * * mon-fri", 2)
    assert got.entries["worm-selftest"] == schedule.Entry("worm-selftest", "0 */6 * * *", 0)
    assert parse('disposition:\n  cron: "0 4 * * *"\n').entries["disposition"].cron == "0 4 * * *"
    assert parse("# only comments\n").entries == {n: schedule.Entry(n, c) for n, c in DEFAULTS.items()}
    assert parse("# only comments\n").sha256 is not None


def test_next_runs_are_in_utc_and_strictly_after() -> None:
    entry = schedule.Entry("disposition", "0 2 * * *")
    assert entry.next_after(datetime(2026, 12, 2, 1, 59, tzinfo=UTC)) == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    assert entry.next_after(datetime(2026, 12, 2, 2, 0, tzinfo=UTC)) == datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
    weekly = schedule.Entry("disposition", "0 2 * * sun")  # 2026-12-06 is a Sunday
    assert weekly.next_after(datetime(2026, 12, 2, tzinfo=UTC)) == datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ('disposition: "0 2 * *"\n', "policies/schedule.yaml:1: disposition: '0 2 * *' has 4 fields: five fields"),
    ('disposition: "0 25 * * *"\n', "policies/schedule.yaml:1: disposition: '0 25 * * *' is not a cron line"),
    ('disposition: "0 2 * * 0"\n', "policies/schedule.yaml:1: disposition: day of week '0': write weekdays as names"),
    ('disposition: "0 2 * * */2"\n', "day of week '*/2': write weekdays as names"),
    ('disposition: "0 2 1 * mon"\n', "disposition: restrict the day of month or the day of week, not both"),
    ("disposition: 2\n", "policies/schedule.yaml:1: disposition: expected a cron line in quotes"),
    ("disposition:\n  cron: \"0 2 * * *\"\n  when: x\n", "policies/schedule.yaml:3: disposition.when: unknown key 'when' (allowed: cron)"),
    ("disposition:\n  every: 5\n", "unknown key 'every' (allowed: cron)"),
    ("disposition: {}\n", "policies/schedule.yaml:1: disposition.cron: missing"),
    ('\n\ndispositon: "0 2 * * *"\n', "policies/schedule.yaml:3: dispositon: unknown job 'dispositon' "
                                    "(scheduled jobs: disposition, worm-selftest)"),
    ('seal: "* * * * *"\n', "policies/schedule.yaml:1: seal: seal is a housekeeping job that runs every "
                            "ARCHIVER_SEAL_INTERVAL seconds, not on this schedule"),
    ('disposition: "0 2 * * *"\ndisposition: "0 3 * * *"\n', "policies/schedule.yaml:2: disposition: duplicate key (first on line 1)"),
    ("- disposition\n", "policies/schedule.yaml:1: expected a mapping of job names to cron lines"),
    ('disposition: "0 2 * * *\n', "policies/schedule.yaml:2: not valid YAML"),
])
def test_invalid_files_are_refused_precisely(text: str, expected: str) -> None:
    assert expected in str(refused(text))


def test_a_missing_file_keeps_every_default_and_an_unreadable_one_is_refused(tmp_path: Path) -> None:
    got = schedule.load(tmp_path, DEFAULTS, HOUSEKEEPING)
    assert got.sha256 is None and got.entries["disposition"].cron == "0 2 * * *"
    (tmp_path / "schedule.yaml").mkdir()
    with pytest.raises(ScheduleError, match="schedule.yaml: cannot be read"):
        schedule.load(tmp_path, DEFAULTS, HOUSEKEEPING)


def test_the_shipped_file_schedules_every_registered_scheduled_job() -> None:
    registered = jobs.registered()
    loaded = schedule.load(ROOT / "policies", {n: j.cron for n, j in registered.items() if j.cron},
                           {n: j.cadence for n, j in registered.items() if not j.cron})
    assert loaded.sha256 is not None
    named = {name for name, e in loaded.entries.items() if e.line}
    assert named == {n for n, j in registered.items() if j.scheduled}  # the file names each one
    assert all(loaded.entries[n].cron == registered[n].cron for n in named)  # at its default


def test_a_job_registers_once_with_a_cron_line_or_an_interval() -> None:
    with pytest.raises(ValueError, match="cron line .* or an interval"):
        jobs.Job("x", lambda s: None, "x")
    with pytest.raises(ValueError, match="write weekdays as names"):
        jobs.Job("x", lambda s: None, "x", cron="0 2 * * 1")
    with pytest.raises(ValueError, match="registered already"):
        jobs.register(jobs.Job("seal", lambda s: None, "another seal", cron="0 2 * * *"))


def test_jobs_refuses_to_start_and_jobs_list_names_the_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    shutil.copy(ROOT / "policies" / "retention.yaml", folder)  # a valid one: only the schedule is wrong
    (folder / "schedule.yaml").write_text('# schedule\nworm-selftest: "0 */6 * * 7"\n')
    for k, v in make_env(tmp_path / "home", ARCHIVER_POLICIES=str(folder)).items():
        monkeypatch.setenv(k, v)
    assert CliRunner().invoke(main, ["init"]).exit_code == 0
    expected = (f"error[policy-invalid]: {folder / 'schedule.yaml'}:2: worm-selftest: day of week '7': "
                "write weekdays as names")
    for args in (["jobs"], ["jobs", "list"], ["jobs", "run", "worm-selftest"], ["selftest"]):
        got = CliRunner().invoke(main, args)
        assert got.exit_code == 2, (args, got.output)
        assert expected in got.stderr and "hint: fix the file and run 'archiver jobs list'" in got.stderr
    (folder / "schedule.yaml").write_text('worm-selftest: "15 */6 * * *"\n')
    listed = CliRunner().invoke(main, ["jobs", "list"])
    assert listed.exit_code == 0, listed.output
    assert f"worm-selftest  scheduled  15 */6 * * *  [{folder / 'schedule.yaml'}:1]  never run" in listed.stdout
    assert "seal  housekeeping  every ARCHIVER_SEAL_INTERVAL seconds  [settings]" in listed.stdout
