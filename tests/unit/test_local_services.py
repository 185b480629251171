"""The local service scripts work from a checkout at any depth: Ray's session folder (it holds
Unix sockets, whose paths may not exceed 107 bytes) is kept short whatever the checkout's path."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what Ray 2.60 puts under its temp folder: the longest socket path of a session
RAY_SOCKET = "session_2026-11-29_13-23-26_123456_1234567/sockets/plasma_store"


def ray_tmp(run_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "CLUSTER_RAY_TMP"}
    out = subprocess.run(["bash", str(ROOT / "infra/local/cluster.sh"), "ray-tmp"], capture_output=True, text=True,
                         env={**env, "EMBEDWORKER_RUN_DIR": str(run_dir)}, check=True)
    return out.stdout.strip()


def test_ray_socket_paths_fit_from_a_deep_checkout(tmp_path):
    deep = tmp_path / ("checkout-" * 12) / ("nested-" * 12) / ".run"
    shallow = tmp_path / ".run"
    for run_dir in (deep, shallow):
        temp = ray_tmp(run_dir)
        assert not temp.startswith(str(tmp_path)), temp
        assert len(f"{temp}/{RAY_SOCKET}".encode()) <= 107, temp
    assert ray_tmp(deep) != ray_tmp(shallow)  # one folder per checkout: two clones' clusters do not mix
    assert ray_tmp(deep) == ray_tmp(deep)
