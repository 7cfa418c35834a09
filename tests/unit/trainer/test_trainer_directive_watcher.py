import os

from marco_contract.formats import Directive
from marco_trainer.train.directive import DirectiveWatcher, differs, is_next


def test_watcher_reports_each_new_directive_once(tmp_path):
    path = tmp_path / "directive.json"
    watcher = DirectiveWatcher(path)
    assert watcher.poll() is None  # no file yet: train at the command line's LR
    path.write_text(Directive(cycle=1, learning_rate=1e-5).model_dump_json())
    assert watcher.poll() == Directive(cycle=1, learning_rate=1e-5)
    assert watcher.poll() is None  # unchanged: one stat, no read
    tmp = tmp_path / "next.json"
    tmp.write_text(Directive(cycle=2, learning_rate=3e-6, stop=True).model_dump_json())
    os.replace(tmp, path)
    assert watcher.poll() == Directive(cycle=2, learning_rate=3e-6, stop=True)


def test_invalid_directive_is_ignored_and_counted(tmp_path):
    path = tmp_path / "directive.json"
    path.write_text('{"cycle": 1, "learning_rate": -1}')
    watcher = DirectiveWatcher(path)
    assert watcher.poll() is None and watcher.invalid_reads == 1
    path.write_text("{broken")
    assert watcher.poll() is None and watcher.invalid_reads == 2


def test_without_a_control_file_nothing_changes():
    assert DirectiveWatcher(None).poll() is None


def test_only_real_changes_count():
    a = Directive(cycle=1, learning_rate=1e-5, reason="σ high")
    assert differs(a, None)
    assert not differs(a, Directive(cycle=1, learning_rate=1e-5))
    assert differs(Directive(cycle=2, learning_rate=1e-5), a)
    assert differs(Directive(cycle=1, learning_rate=1e-5, stop=True), a)


# --- the wait at a cycle's boundary (issue 16: same manifest, same seed, same LR sequence)


def write(path, directive):
    tmp = path.with_name("next.json")
    tmp.write_text(directive.model_dump_json())
    os.replace(tmp, path)  # as the operator writes it: atomically, a new inode


def test_the_wait_ends_with_the_next_cycle_and_passes_over_a_rewrite(tmp_path):
    path = tmp_path / "directive.json"
    current = Directive(cycle=1, learning_rate=1e-5)
    write(path, current)
    watcher = DirectiveWatcher(path)
    assert watcher.poll() == current
    # What the operator writes while the trainer waits, one file per look: the same
    # cycle again (another reason), then cycle 2.
    writes = [
        Directive(cycle=1, learning_rate=1e-5, reason="rewritten"),
        Directive(cycle=2, learning_rate=4e-6, reason="Eq. 1"),
    ]
    looks = []

    def operator_writes(seconds):
        looks.append(seconds)
        write(path, writes[len(looks) - 1])

    got = watcher.wait_for_next(current, timeout=60, interval=0.25, sleep=operator_writes)
    assert got == Directive(cycle=2, learning_rate=4e-6, reason="Eq. 1")
    assert looks == [0.25, 0.25]  # two looks between reads: the rewrite did not end it


def test_a_stop_ends_the_wait(tmp_path):
    path = tmp_path / "directive.json"
    current = Directive(cycle=3, learning_rate=1e-5)
    watcher = DirectiveWatcher(path)
    write(path, Directive(cycle=3, learning_rate=1e-5, stop=True, reason="max cycles"))
    got = watcher.wait_for_next(current, timeout=60, sleep=lambda s: None)
    assert got is not None and got.stop and got.cycle == 3


def test_the_wait_gives_up_after_its_timeout(tmp_path):
    path = tmp_path / "directive.json"
    current = Directive(cycle=0, learning_rate=1e-5)
    write(path, current)
    watcher = DirectiveWatcher(path)
    watcher.poll()
    now = [100.0]

    def sleep(seconds):
        now[0] += seconds

    got = watcher.wait_for_next(
        current, timeout=1.0, interval=0.25, clock=lambda: now[0], sleep=sleep
    )
    # Looks at 100.0, 100.25, 100.5, 100.75 and 101.0, where the deadline (101.0) is reached.
    assert got is None and now[0] == 101.0


def test_sigterm_cuts_the_wait_short(tmp_path):
    watcher = DirectiveWatcher(tmp_path / "directive.json")
    slept = []
    got = watcher.wait_for_next(
        Directive(cycle=0, learning_rate=1e-5),
        timeout=300,
        cancelled=lambda: True,
        sleep=slept.append,
    )
    assert got is None and slept == []


def test_what_ends_a_cycle():
    current = Directive(cycle=2, learning_rate=1e-5)
    assert is_next(Directive(cycle=3, learning_rate=1e-6), current)
    assert is_next(Directive(cycle=2, learning_rate=1e-5, stop=True), current)
    assert not is_next(Directive(cycle=2, learning_rate=3e-6), current)
    assert not is_next(Directive(cycle=1, learning_rate=1e-6), current)
