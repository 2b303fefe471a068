"""Package boundaries: imports point only downward, and every package declares what it imports.

The layers (README, "Architecture"): interfaces <- sarm2_common <- sarm2_reward / sarm2_sim
<- spiral_policy (SPIRAL relabels with the reward model) <- sarm2_bringup. A package may import
only packages on a lower floor; the simulator is imported only by the bring-up package (a robot
install has no simulator), besides bench/ and tests, which are not packages.

Imports are read from the source with ``ast`` (imports inside functions included), for every
module and launch file of every package.
"""

import ast
import os
from pathlib import Path
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = {'sarm2_msgs': 0, 'sarm2_common': 1, 'sarm2_reward': 2, 'sarm2_sim': 2,
          'spiral_policy': 3, 'sarm2_bringup': 4}
SIMULATOR_USERS = ('sarm2_sim', 'sarm2_bringup')

sys.path.insert(0, str(REPO / 'scripts'))
from preflight import NOT_ON_PYPI, PYTHON_DEPENDENCIES  # noqa: E402


def package_sources(package: str) -> list[Path]:
    """Python sources of ``package``: its modules and its launch files (not its tests)."""
    root = REPO / 'src' / package
    files = sorted((root / package).rglob('*.py')) if (root / package).is_dir() else []
    files += sorted((root / 'launch').glob('*.py')) if (root / 'launch').is_dir() else []
    files += [root / 'setup.py'] if (root / 'setup.py').is_file() else []
    return files


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


def package_imports(package: str) -> dict[str, set[Path]]:
    """Map each imported top-level name to the files of ``package`` importing it."""
    found: dict[str, set[Path]] = {}
    for path in package_sources(package):
        for name in imported_modules(path):
            found.setdefault(name, set()).add(path.relative_to(REPO))
    return found


def test_import_direction_only_downward_and_no_cycles():
    upward = []
    for package, floor in FLOORS.items():
        for name, files in package_imports(package).items():
            if name in FLOORS and name != package and FLOORS[name] >= floor:
                upward.append(f'{package} (floor {floor}) imports {name} (floor {FLOORS[name]}) '
                              f'in {sorted(map(str, files))}')
    assert not upward, '\n'.join(upward)


def test_import_direction_simulator_only_below_bringup():
    users = [package for package in FLOORS if package not in SIMULATOR_USERS
             and 'sarm2_sim' in package_imports(package)]
    assert not users, f'{users} import sarm2_sim; only {SIMULATOR_USERS} may'


def test_import_direction_check_sees_an_upward_import(tmp_path):
    """Guard against a vacuous pass: the import reader finds imports inside functions too."""
    module = tmp_path / 'module.py'
    module.write_text('def f():\n    from sarm2_bringup.demo import main\n    import rclpy.node\n')
    assert imported_modules(module) == {'sarm2_bringup', 'rclpy'}


def ros_package_installed(name: str) -> bool:
    """Tell whether ``name`` is a ROS package (in the workspace or under AMENT_PREFIX_PATH)."""
    if (REPO / 'src' / name / 'package.xml').is_file():
        return True
    prefixes = os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) + [sys.prefix]
    return any((Path(p) / 'share' / name / 'package.xml').is_file() for p in prefixes if p)


def declared_dependencies(package: str) -> set[str]:
    from catkin_pkg.package import parse_package

    manifest = parse_package(REPO / 'src' / package / 'package.xml')
    return {d.name for d in manifest.exec_depends + manifest.build_export_depends
            + manifest.build_depends}


def is_standard_library(name: str) -> bool:
    return name in sys.stdlib_module_names or name == '__future__'


@pytest.mark.parametrize('package', [p for p in FLOORS if p != 'sarm2_msgs'])
def test_package_xml_declares_every_imported_package(package):
    python_keys = {module.split('.')[0]: key for key, module in PYTHON_DEPENDENCIES.items()}
    declared = declared_dependencies(package)
    missing, unknown = [], []
    for name, files in sorted(package_imports(package).items()):
        if name == package or is_standard_library(name) or name in ('setuptools',):
            continue
        if name in python_keys:
            needed = python_keys[name]
        elif name in NOT_ON_PYPI or ros_package_installed(name):
            needed = name
        else:
            unknown.append(f'{name} (in {sorted(map(str, files))[0]})')
            continue
        if needed not in declared:
            missing.append(f'{needed} (imported in {sorted(map(str, files))[0]})')
    assert not unknown, (f'{package}: imports of unknown origin: {unknown}; add them to '
                         'scripts/preflight.py PYTHON_DEPENDENCIES and package.xml')
    assert not missing, f'{package}/package.xml does not declare: {missing}'
