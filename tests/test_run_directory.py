"""The run-directory checks every process of a distributed run makes at the same time."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from instructerc.training.run_directory import check_run_directory_creatable


def test_the_probe_never_creates_the_run_directory_itself(tmp_path, monkeypatch) -> None:
    # Another process checking the same output_dir must never see it appear and vanish.
    root = tmp_path / "a" / "run"
    created: list[str] = []
    real_mkdir = os.mkdir

    def recording_mkdir(path, *args, **kwargs):
        created.append(os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", recording_mkdir)
    check_run_directory_creatable(root)
    assert created and all(Path(path).parent == tmp_path and Path(path).name.startswith(".instructerc-probe-") for path in created)
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []


def test_processes_probing_one_missing_output_dir_at_once_all_pass(tmp_path) -> None:
    root = tmp_path / "a" / "b" / "run"
    failures: list[BaseException] = []

    def probe() -> None:
        for _ in range(300):
            try:
                check_run_directory_creatable(root)
            except BaseException as error:  # noqa: BLE001 - collected for the assertion
                failures.append(error)
                return

    threads = [threading.Thread(target=probe) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and list(tmp_path.iterdir()) == []
