"""The end of a command run as one of several processes: the group is ended, the output kept,
and the interpreter's teardown (where gloo's leftovers aborted finished processes) skipped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from instructerc.cli.process_group import end_process_group


def test_end_process_group_ends_a_group_once(tmp_path):
    import torch.distributed as dist

    assert end_process_group() is False  # no group: nothing to end
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert end_process_group() is True
    assert not dist.is_initialized()
    assert end_process_group() is False


def test_a_group_member_exits_with_its_status_and_its_output_but_no_teardown():
    script = textwrap.dedent(
        """
        import atexit, logging, sys
        from instructerc.cli.process_group import exit_group_member
        atexit.register(lambda: print("teardown ran"))
        logging.basicConfig(stream=sys.stderr)
        print("model written")  # stdout is a pipe: buffered until flushed
        logging.getLogger("run").warning("a warning")
        exit_group_member(3)
        print("after exit")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "model written\n"
    assert "a warning" in done.stderr
