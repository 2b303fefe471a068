"""Check the workspace before colcon runs, so problems come out as one clear sentence.

Checks every package.xml (format 3, a maintainer email catkin_pkg accepts, dependencies that
exist) and parses every .msg/.srv/.action with the same parser rosidl uses. Exits 1 with a message
naming the file and the problem; colcon would otherwise bury it in CMake output.
"""

import importlib.util
import os
import pathlib
import sys

# Dependencies provided by pip packages rather than ROS packages: rosdep key -> import name.
PYTHON_DEPENDENCIES = {
    'python3-numpy': 'numpy',
    'python3-yaml': 'yaml',
    'python3-opencv': 'cv2',
    'python3-pytest': 'pytest',
    'python3-torch': 'torch',
    'python3-safetensors': 'safetensors',
    'python3-transforms3d': 'transforms3d',
    'python3-tqdm': 'tqdm',
    'python3-matplotlib': 'matplotlib',
    'python3-rosbags': 'rosbags',
    'python3-mcap': 'mcap',
    'python3-mujoco': 'mujoco',
    'python3-metaworld': 'metaworld',
    'python3-msgpack': 'msgpack',
    'python3-websockets': 'websockets',
    'python3-ruamel.yaml': 'ruamel.yaml',
    'python3-pyarrow': 'pyarrow',
    'python3-av': 'av',
    'python3-selenium': 'selenium',
}
# Build tools and runtime groups that are not installed as share/<name>/package.xml everywhere.
ALWAYS_AVAILABLE = {
    'ament_cmake', 'ament_python', 'rosidl_default_generators', 'rosidl_default_runtime',
    'ament_copyright', 'ament_flake8', 'ament_pep257', 'ament_lint_auto', 'ament_lint_common',
}

# Needed only by `ros2 launch` (launch files, RViz): present on every ROS 2 install, absent from
# PyPI, so a machine running on the Kilted wheels has none of them and runs the nodes without
# launch (the README says how).
LAUNCH_ONLY = {'launch', 'launch_ros', 'rviz2'}


def ros_package_exists(name: str) -> bool:
    """Return True if ``name`` is installed in any prefix of AMENT_PREFIX_PATH."""
    prefixes = os.environ.get('AMENT_PREFIX_PATH', sys.prefix).split(os.pathsep)
    prefixes.append(sys.prefix)
    return any((pathlib.Path(p) / 'share' / name / 'package.xml').exists() for p in prefixes if p)


def check_package(manifest: pathlib.Path, workspace_names: set[str]) -> list[str]:
    """Return the problems found in one package.xml and its interface files."""
    from catkin_pkg.package import InvalidPackage, parse_package

    problems = []
    try:
        package = parse_package(manifest)
    except InvalidPackage as error:
        return [f'{manifest}: invalid package.xml: {error}']
    if package.package_format != 3:
        problems.append(f'{manifest}: package format {package.package_format}, expected 3')
    depends = (package.build_depends + package.buildtool_depends + package.exec_depends
               + package.test_depends + package.build_export_depends)
    for dep in sorted({d.name for d in depends}):
        if dep in workspace_names or dep in ALWAYS_AVAILABLE:
            continue
        if dep in LAUNCH_ONLY and not os.environ.get('ROS_DISTRO'):
            continue
        if dep in PYTHON_DEPENDENCIES:
            if importlib.util.find_spec(PYTHON_DEPENDENCIES[dep]) is None:
                module = PYTHON_DEPENDENCIES[dep]
                problems.append(f'{manifest}: dependency {dep} is missing: '
                                f'no pip package provides the module "{module}"')
            continue
        if dep.startswith('python3-'):
            problems.append(f'{manifest}: unknown Python dependency {dep}: add it to '
                            'PYTHON_DEPENDENCIES in scripts/preflight.py and requirements/')
            continue
        if not ros_package_exists(dep):
            problems.append(f'{manifest}: dependency {dep} is not installed '
                            '(not a workspace package and not found in AMENT_PREFIX_PATH)')
    problems += check_interfaces(manifest.parent, package.name)
    return problems


def check_interfaces(package_dir: pathlib.Path, package_name: str) -> list[str]:
    """Parse every interface definition of a package with rosidl's own parser."""
    from rosidl_adapter.parser import (parse_action_string, parse_message_string,
                                       parse_service_string)

    parsers = {'msg': parse_message_string, 'srv': parse_service_string,
               'action': parse_action_string}
    problems = []
    for kind, parse in parsers.items():
        for path in sorted((package_dir / kind).glob(f'*.{kind}')):
            try:
                parse(package_name, path.stem, path.read_text())
            except Exception as error:  # the parser raises many exception types
                problems.append(f'{path}: malformed {kind} definition: {error}')
    return problems


def main(src: pathlib.Path) -> int:
    """Check all packages under ``src``; print problems and return an exit code."""
    manifests = sorted(src.glob('*/package.xml'))
    if not manifests:
        print(f'[preflight] no packages found under {src}', file=sys.stderr)
        return 1
    names = {m.parent.name for m in manifests}
    problems = [p for m in manifests for p in check_package(m, names)]
    for problem in problems:
        print(f'[preflight] {problem}', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(pathlib.Path(sys.argv[1])))
