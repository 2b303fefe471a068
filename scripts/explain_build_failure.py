"""Turn a failed colcon build into the few lines that name the problem.

colcon prints CMake and generator output by the screenful; users need the package and the error.
Reads log/colcon-build.out (the captured build output) and prints the lines that matter.
"""

import pathlib
import re
import sys

PATTERNS = [
    (re.compile(r'Could not find a package configuration file provided by\s+"(\w+)"'),
     'missing dependency: package "{0}" is not installed (add it to requirements or install it)'),
    (re.compile(r'Error processing .*? of \'(.*?)\'.*'), 'malformed interface definition: {0}'),
    (re.compile(r'(ModuleNotFoundError: No module named .*)'), '{0}'),
    (re.compile(r'(InvalidPackage.*)'), '{0}'),
    # colcon's own errors (dependency cycles, unknown packages) with their detail lines.
    (re.compile(r'ERROR:colcon:(.*(?:\n(?!\[)\S.*)*)'), '{0}'),
]


def explain(output: str) -> list[str]:
    """Return human-readable explanations for known failure patterns in ``output``."""
    found = []
    for pattern, template in PATTERNS:
        for match in pattern.finditer(output):
            line = template.format(*match.groups())
            if line not in found:
                found.append(line)
    failed = re.findall(r'Failed\s+<<<\s+(\S+)', output)
    if failed:
        found.insert(0, 'failed packages: ' + ', '.join(failed))
    return found


if __name__ == '__main__':
    log = pathlib.Path(sys.argv[1]) / 'colcon-build.out'
    text = log.read_text(errors='replace') if log.exists() else ''
    lines = explain(text) or [line for line in text.splitlines() if 'rror' in line][-15:]
    for line in lines:
        print(f'[colcon] {line}', file=sys.stderr)
