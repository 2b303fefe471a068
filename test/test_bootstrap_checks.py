"""The bootstrap names the problem when a package is broken, instead of a wall of CMake output."""

import pathlib
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / 'scripts' / name), *args],
                          capture_output=True, text=True, timeout=120)


def copy_msgs_package(tmp_path: pathlib.Path) -> pathlib.Path:
    src = tmp_path / 'src'
    shutil.copytree(REPO / 'src' / 'sarm2_msgs', src / 'sarm2_msgs',
                    ignore=shutil.ignore_patterns('test'))
    return src


def test_real_workspace_passes_preflight():
    result = run_script('preflight.py', str(REPO / 'src'))
    assert result.returncode == 0, result.stderr


def test_malformed_message_is_named(tmp_path):
    src = copy_msgs_package(tmp_path)
    bad = src / 'sarm2_msgs' / 'msg' / 'StageReward.msg'
    bad.write_text(bad.read_text() + 'float32 progress with a typo\n')
    result = run_script('preflight.py', str(src))
    assert result.returncode == 1
    assert 'StageReward.msg' in result.stderr and 'malformed msg definition' in result.stderr


def test_missing_dependency_is_named(tmp_path):
    src = copy_msgs_package(tmp_path)
    manifest = src / 'sarm2_msgs' / 'package.xml'
    manifest.write_text(manifest.read_text().replace(
        '<depend>std_msgs</depend>', '<depend>std_msgs</depend>\n  <depend>no_such_msgs</depend>'))
    result = run_script('preflight.py', str(src))
    assert result.returncode == 1
    assert 'dependency no_such_msgs is not installed' in result.stderr


def test_invalid_maintainer_email_is_named(tmp_path):
    src = copy_msgs_package(tmp_path)
    manifest = src / 'sarm2_msgs' / 'package.xml'
    manifest.write_text(manifest.read_text().replace('maintainers@sarm2.dev', 'not an email'))
    result = run_script('preflight.py', str(src))
    assert result.returncode == 1 and 'invalid package.xml' in result.stderr


def test_colcon_failure_is_summarised(tmp_path):
    log = tmp_path / 'log'
    log.mkdir()
    (log / 'colcon-build.out').write_text(
        'Starting >>> sarm2_msgs\n'
        'CMake Error at CMakeLists.txt:6 (find_package):\n'
        '  By not providing "Findfoo_msgs.cmake" in CMAKE_MODULE_PATH this project has\n'
        '  Could not find a package configuration file provided by "foo_msgs" with any\n'
        'Failed   <<< sarm2_msgs [2.1s, exited with code 1]\n')
    result = run_script('explain_build_failure.py', str(log))
    assert 'failed packages: sarm2_msgs' in result.stderr
    assert 'package "foo_msgs" is not installed' in result.stderr
