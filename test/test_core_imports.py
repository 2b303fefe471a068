"""The ROS-free core imports with rclpy blocked (STYLE rule 1).

Every module of the Python packages outside their ``ros`` subpackage is imported in a fresh
interpreter in which ``import rclpy`` fails.
"""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('sarm2_common', 'sarm2_reward', 'sarm2_sim', 'spiral_policy', 'sarm2_bringup')


def core_modules() -> list[str]:
    """Dotted names of every core module (everything outside ``<pkg>/ros/``)."""
    names = []
    for package in PACKAGES:
        root = REPO / 'src' / package
        for path in sorted((root / package).rglob('*.py')):
            relative = path.relative_to(root).with_suffix('')
            parts = list(relative.parts)
            if 'ros' in parts[1:]:
                continue
            if parts[-1] == '__init__':
                parts = parts[:-1]
            names.append('.'.join(parts))
    return names


BLOCKED_IMPORT = """
import importlib, sys
sys.modules['rclpy'] = None  # any `import rclpy` now raises ImportError
failures = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        failures.append(f'{name}: {type(error).__name__}: {error}')
print('\\n'.join(failures))
sys.exit(1 if failures else 0)
"""


def test_core_modules_found():
    modules = core_modules()
    assert 'sarm2_common.vocabulary' in modules
    assert not any('.ros' in m for m in modules)


def test_core_imports_without_rclpy():
    modules = core_modules()
    result = subprocess.run([sys.executable, '-c', BLOCKED_IMPORT, *modules],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f'core modules need rclpy:\n{result.stdout}{result.stderr}'


def test_blocking_rclpy_really_blocks():
    """Guard against a vacuous pass: a module that imports rclpy must fail under the block."""
    result = subprocess.run([sys.executable, '-c', BLOCKED_IMPORT, 'sarm2_common.ros.qos'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and 'sarm2_common.ros.qos' in result.stdout
