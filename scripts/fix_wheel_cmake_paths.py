"""Rewrite build-container paths baked into the ROS 2 wheels' CMake files.

The ros-* wheels are built in a manylinux container; their exported CMake config files name that
container's Python include directory and numpy include directory. Replace them with this
interpreter's paths. Idempotent: files already fixed are left alone.
"""

import pathlib
import sys
import sysconfig

import numpy

CONTAINER_PATHS = {
    '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include':
        numpy.get_include(),
    '/opt/python/cp311-cp311/include/python3.11': sysconfig.get_paths()['include'],
}


def fix_tree(prefix: pathlib.Path) -> int:
    """Rewrite every CMake file under ``prefix/share``; return how many were changed."""
    changed = 0
    for path in (prefix / 'share').rglob('*.cmake'):
        text = path.read_text(errors='surrogateescape')
        new = text
        # Longest first: the numpy path contains the include-directory prefix.
        for old, replacement in CONTAINER_PATHS.items():
            new = new.replace(old, replacement)
        if new != text:
            path.write_text(new, errors='surrogateescape')
            changed += 1
    return changed


if __name__ == '__main__':
    venv = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    print(f'[bootstrap] fixed container paths in {fix_tree(venv)} wheel CMake files')
