"""A plain `colcon build` (copies, not symlinks) works without the source tree.

The bring-up package must find its configs, launch files, console scripts and the task catalogue
in the install space, as on a robot that installed the packages: the demo's first step runs from
a copy of the install space in another directory, with the source tree out of reach.
"""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def plain_build(base: Path) -> Path:
    """`colcon build` the workspace into ``base`` without --symlink-install; return install/."""
    env = dict(os.environ)
    venv = Path(sys.prefix)
    if not env.get('ROS_DISTRO'):
        # Like scripts/bootstrap.sh: ROS 2 from the wheels in the venv.
        env['AMENT_PREFIX_PATH'] = env['CMAKE_PREFIX_PATH'] = str(venv)
    env['PATH'] = f'{venv / "bin"}:{env["PATH"]}'
    base.mkdir(parents=True)
    result = subprocess.run(
        [str(venv / 'bin' / 'colcon'), '--log-base', str(base / 'log'), 'build',
         '--base-paths', str(REPO / 'src'), '--build-base', str(base / 'build'),
         '--install-base', str(base / 'install'),
         '--cmake-args', '-DBUILD_TESTING=OFF', f'-DPython3_EXECUTABLE={sys.executable}'],
        cwd=base, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return base / 'install'


def installed_env(install: Path) -> dict:
    """Return the environment of `source <install>/setup.sh`, without the repo install."""
    keep = {k: v for k, v in os.environ.items()
            if k not in ('PYTHONPATH', 'AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH',
                         'COLCON_PREFIX_PATH')}
    keep['PATH'] = os.pathsep.join(p for p in os.environ['PATH'].split(os.pathsep)
                                   if str(REPO / 'install') not in p)
    if not os.environ.get('ROS_DISTRO'):
        keep['AMENT_PREFIX_PATH'] = sys.prefix
    # A moved install space is sourced by naming where it is now.
    keep['COLCON_CURRENT_PREFIX'] = str(install)
    dump = subprocess.run(['bash', '-c', f'. "{install}/setup.sh" && env -0'], env=keep,
                          capture_output=True, timeout=60, check=True).stdout
    return dict(item.split('=', 1) for item in dump.decode().split('\0') if '=' in item)


def test_plain_install_runs_the_demos_first_step_away_from_the_source(tmp_path):
    install = plain_build(tmp_path / 'ws')
    # Move the install space: nothing may still point into the source tree or the build.
    moved = tmp_path / 'robot' / 'install'
    moved.parent.mkdir()
    shutil.copytree(install, moved, symlinks=True)
    shutil.rmtree(tmp_path / 'ws')
    assert not any(p.is_symlink() for p in moved.rglob('*.py'))
    env = installed_env(moved)
    where = subprocess.run(
        [sys.executable, '-c',
         'import sarm2_bringup, sarm2_common.catalogue as c\n'
         'from sarm2_bringup.sim_graph import config_file, console_script\n'
         'print(sarm2_bringup.__file__, c.default_catalogue_path(), config_file("sim_node.yaml"),'
         ' console_script("sarm2_sim", "sim_node"), sep="\\n")'],
        cwd=tmp_path / 'robot', env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    paths = where.stdout.split()
    assert len(paths) == 4 and all(p.startswith(str(moved)) for p in paths), paths
    demo = subprocess.run(
        [sys.executable, '-m', 'sarm2_bringup.demo', '--tasks', 'reach-v3',
         '--demos-per-task', '4', '--max-steps', '30', '--until', 'demos',
         '--runs-dir', 'runs'],
        cwd=tmp_path / 'robot', env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert 'stopped after step demos' in demo.stdout
    bags = list((tmp_path / 'robot' / 'runs' / 'latest').glob('demos/bags/*/*/metadata.yaml'))
    assert len(bags) == 4, demo.stdout[-2000:]
