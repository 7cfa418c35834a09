import os

from marco_contract.formats import Directive
from marco_trainer.train.directive import DirectiveWatcher, differs


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
