"""``dvis_attn_pl.utils.compat``: each workaround of a library internal, its version check and its fallback."""

from __future__ import annotations

import errno
import os
import threading
import warnings

import pytest
import torch

from dvis_attn_pl.utils import compat


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which distributions already warned."""
    monkeypatch.setattr(compat, "_warned", set())


def _pretend(monkeypatch, dist: str, version: tuple[int, int] | None) -> None:
    real = compat.installed_version
    monkeypatch.setattr(compat, "installed_version", lambda d: version if d == dist else real(d))


def test_installed_versions_are_in_the_tested_ranges(fresh_warnings):
    """The environment the suite runs in is one the workarounds were tested with (else CI says so)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", compat.UntestedVersionWarning)
        for dist in ("lightning", "torchmetrics", "torch"):
            assert compat.is_tested(dist, "this test"), (dist, compat.installed_version(dist))


def test_pyproject_upper_bounds_match_the_tested_ranges():
    """Each dependency with a tested range has the range's end as its upper bound in pyproject.toml."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    for dist in ("lightning", "torchmetrics", "torch"):
        high = compat.TESTED[dist][1]
        (spec,) = [d for d in deps if d.split(">")[0].split("<")[0].strip() == dist]
        assert f"<{high[0]}.{high[1]}" in spec, spec


def test_untested_version_warns_once(monkeypatch, fresh_warnings):
    _pretend(monkeypatch, "lightning", (9, 0))
    with pytest.warns(compat.UntestedVersionWarning, match=r"lightning 9\.0 is outside"):
        assert not compat.is_tested("lightning", "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not compat.is_tested("lightning", "x")  # once per distribution


class _Connector:
    def register_signal_handlers(self):
        raise AssertionError("Lightning's handlers were installed")


class _Trainer:
    def __init__(self):
        self._signal_connector = _Connector()


def test_signal_handlers_disabled_on_a_real_trainer():
    import lightning as L

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    assert compat.disable_lightning_signal_handlers(trainer)
    trainer._signal_connector.register_signal_handlers()  # now does nothing
    fake = _Trainer()
    assert compat.disable_lightning_signal_handlers(fake)
    fake._signal_connector.register_signal_handlers()


def test_signal_handlers_fallback_without_the_internal(monkeypatch, fresh_warnings):
    _pretend(monkeypatch, "lightning", (3, 0))
    with pytest.warns(compat.UntestedVersionWarning):
        assert compat.disable_lightning_signal_handlers(object()) is False


class _Proc:
    returncode = 0

    def poll(self):
        return 0


def test_child_processes_adopted_from_lightnings_observer():
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

    gate = threading.Event()

    class Observer(_ChildProcessObserver):  # Lightning's own thread, kept alive until the test ends
        def run(self):
            gate.wait(10)

    procs = [_Proc(), _Proc()]
    observer = Observer(main_pid=os.getpid(), child_processes=procs)
    assert compat.adopt_lightning_child_processes() is None  # not started yet
    observer.start()
    try:
        assert compat.adopt_lightning_child_processes() == procs
        assert observer._child_processes == []  # the observer's next round ends it quietly
        assert observer._run() is True
        assert compat.adopt_lightning_child_processes() is None
    finally:
        gate.set()
        observer.join()


def test_metric_dtype_kept(monkeypatch, fresh_warnings):
    from torchmetrics import Metric

    class M(Metric):
        def update(self):
            pass

        def compute(self):
            return 0

    m = M()
    assert compat.keep_metric_dtype(m, torch.float64)
    assert m.dtype == torch.float64  # the public property reads the private attribute
    _pretend(monkeypatch, "torchmetrics", (0, 1))
    with pytest.warns(compat.UntestedVersionWarning):
        assert compat.keep_metric_dtype(object(), torch.float64) is False


class _Writer:
    def __init__(self, attr: str):
        setattr(self, attr, "/runs/x/events.out")

    def write(self):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("attr", compat.WRITER_FILE_ATTRS)
def test_file_being_written_from_frame_locals(attr):
    try:
        _Writer(attr).write()
    except OSError as exc:
        assert compat.file_being_written(exc) == "/runs/x/events.out"
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as exc:
        assert compat.file_being_written(exc) is None


def test_thread_excepthook_quiets_only_tensorboard_writer_errors(monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(compat, "_previous_thread_hook", lambda args: seen.append(args.exc_type))
    compat.install_thread_excepthook()
    compat.install_thread_excepthook()
    assert threading.excepthook is compat._thread_hook

    def run(thread_cls, exc):
        def target():
            raise exc

        t = thread_cls(target=target)
        t.start()
        t.join()

    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    class TBThread(threading.Thread):
        pass

    TBThread.__module__ = _AsyncWriterThread.__module__
    run(TBThread, OSError(errno.ENOSPC, "full"))  # quiet: the next writer reports it
    run(TBThread, ValueError("bug"))
    run(threading.Thread, OSError(errno.ENOSPC, "full"))
    assert seen == [ValueError, OSError]


def test_thread_excepthook_falls_back_outside_the_tested_tensorboard(monkeypatch, fresh_warnings):
    seen = []
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(compat, "_previous_thread_hook", lambda args: seen.append(args.exc_type))
    _pretend(monkeypatch, "tensorboard", (1, 0))
    compat.install_thread_excepthook()

    class TBThread(threading.Thread):
        pass

    TBThread.__module__ = compat.TENSORBOARD_WRITER_MODULE + ".event_file_writer"

    def target():
        raise OSError(errno.ENOSPC, "full")

    with pytest.warns(compat.UntestedVersionWarning):
        t = TBThread(target=target)
        t.start()
        t.join()
    assert seen == [OSError]  # the default hook prints it
