"""Install the spiral_policy ROS 2 package (ament_python)."""

import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'spiral_policy'
# Workspace-level config files (task catalogue, node parameters) ship with every package so
# an installed package finds them under share/<package>/config without the source tree.
CONFIG_FILES = sorted(glob.glob(os.path.join('..', '..', 'config', '*.yaml'))
                      + glob.glob(os.path.join('..', '..', 'config', '*.rviz'))
                      + glob.glob(os.path.join('..', '..', 'config', '*.perspective')))

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/config', CONFIG_FILES),
        # The workspace's launch files (robot, sim, replay) start nodes of every package;
        # they install with the package that runs the loop: `ros2 launch spiral_policy ...`.
        ('share/' + PACKAGE + '/launch',
         sorted(glob.glob(os.path.join('..', '..', 'launch', '*.launch.py')))),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='SARM2 maintainers',
    maintainer_email='maintainers@sarm2.dev',
    description='SPIRAL policy improvement, VLA policies, safety, recorder, policy node.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'policy_node = spiral_policy.ros.policy_node:main',
            'train_vla = spiral_policy.bc_training:main',
            'spiral_update = spiral_policy.spiral.offline_update:main',
            'spiral_loop = spiral_policy.spiral_loop:main',
        ],
    },
)
