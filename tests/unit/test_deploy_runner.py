"""The ansible-runner wrapper on real, tiny playbooks run against localhost.

The playbooks only run `debug`/`fail`/`command: true` on the local connection,
so they read and change nothing; what is tested is how events become a
DeployResult: failures with host, task and message, the per-host recap, plays
never reached, and a controller-side error (bad YAML) quoted from Ansible.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.deploy.runner import DeployEvent, failure_message, run_playbook

INVENTORY = """\
all:
  vars: {ansible_connection: local, ansible_python_interpreter: %(python)s}
  hosts: {alpha: {}, beta: {}}
"""

PLAYBOOK = """\
- name: First play
  hosts: all
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.debug: {msg: hello}
    - name: Report a change
      ansible.builtin.command: "true"
      changed_when: true
    - name: Break beta
      ansible.builtin.fail: {msg: "beta is broken on purpose"}
      when: inventory_hostname == 'beta'
    - name: Ignored failure
      ansible.builtin.command: "false"
      ignore_errors: true
      changed_when: false
- name: Only beta
  hosts: beta
  gather_facts: false
  tasks:
    - name: Never reached
      ansible.builtin.debug: {msg: unreachable code}
- name: Last play
  hosts: alpha
  gather_facts: false
  tasks:
    - name: Still runs
      ansible.builtin.debug: {msg: done}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    import sys

    inv = tmp_path / "inventory.yml"
    inv.write_text(INVENTORY % {"python": sys.executable})
    book = tmp_path / "site.yml"
    book.write_text(PLAYBOOK)
    return inv, book


def test_failures_recap_and_events(files: tuple[Path, Path], tmp_path: Path) -> None:
    inv, book = files
    events: list[DeployEvent] = []
    result = run_playbook(book, inv, tmp_path / "pdd", forks=2, on_event=events.append)
    assert not result.ok and result.status == "failed" and result.rc != 0
    assert [(f.host, f.task, f.message) for f in result.failures] == [
        ("beta", "Break beta", "beta is broken on purpose")
    ]
    alpha, beta = result.hosts["alpha"], result.hosts["beta"]
    assert (alpha.changed, alpha.failed, alpha.ignored) == (1, 0, 1)
    assert (beta.failed, beta.last_task) == (1, "Break beta")
    assert alpha.last_task == "Still runs"
    # "Only beta" had no host left, so Ansible skipped it; the last play ran.
    assert result.plays == ("First play", "Only beta", "Last play")
    assert "Last play" in result.plays_run
    assert ("alpha", "Report a change") in {(e.host, e.task) for e in events if e.changed}
    assert (result.artifacts / "job_events").is_dir()


def test_successful_run_is_ok(tmp_path: Path) -> None:
    import sys

    inv = tmp_path / "inventory.yml"
    inv.write_text(INVENTORY % {"python": sys.executable})
    book = tmp_path / "ok.yml"
    book.write_text(
        "- name: Fine\n  hosts: all\n  gather_facts: false\n"
        "  tasks:\n    - name: Nothing\n      ansible.builtin.debug: {msg: ok}\n"
    )
    result = run_playbook(book, inv, tmp_path / "pdd")
    assert result.ok, result.failures
    assert result.changed == 0 and set(result.hosts) == {"alpha", "beta"}
    assert result.plays_not_run == ()


def test_controller_error_is_quoted(files: tuple[Path, Path], tmp_path: Path) -> None:
    inv, book = files
    book.write_text("- name: Bad\n  hosts: all\n  tasks:\n    - name: x: y\n")
    result = run_playbook(book, inv, tmp_path / "pdd")
    assert not result.ok
    (failure,) = result.failures
    assert failure.host == "(controller)"
    assert "YAML" in failure.message or "ERROR" in failure.message, failure.message


def test_failure_message_prefers_msg_then_output() -> None:
    assert failure_message({"msg": "boom", "stderr": "line1\nline2"}) == "boom; line1 | line2"
    assert failure_message({"stdout": "only out"}) == "only out"
    loop = {"results": [{"failed": False}, {"failed": True, "msg": "item 2 broke"}]}
    assert failure_message(loop) == "item 2 broke"
    assert "see the event log" in failure_message({})


def test_plays_never_reached_are_named(files: tuple[Path, Path], tmp_path: Path) -> None:
    # When every host of a play fails, Ansible ends the whole run: the result
    # must say which plays no host got, so nobody mistakes the rest for done.
    inv, book = files
    book.write_text(
        "- name: Breaks everyone\n  hosts: all\n  gather_facts: false\n"
        "  tasks:\n    - name: Fail\n      ansible.builtin.fail: {msg: no}\n"
        "- name: Never started\n  hosts: all\n  gather_facts: false\n"
        "  tasks:\n    - name: Nothing\n      ansible.builtin.debug: {msg: x}\n"
    )
    result = run_playbook(book, inv, tmp_path / "pdd")
    assert result.plays_not_run == ("Never started",)
    assert {f.host for f in result.failures} == {"alpha", "beta"}
