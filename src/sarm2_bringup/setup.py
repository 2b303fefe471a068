"""Install the sarm2_bringup ROS 2 package (ament_python)."""

import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'sarm2_bringup'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/config', sorted(glob.glob(os.path.join('config', '*')))),
        ('share/' + PACKAGE + '/launch',
         sorted(glob.glob(os.path.join('launch', '*.launch.py')))),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='SARM2 maintainers',
    maintainer_email='maintainers@sarm2.dev',
    description='Bring-up of the SARM2 stack: launch files, configs, demo, SPIRAL loop.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'bag_player = sarm2_bringup.ros.bag_player_node:main',
            'spiral_loop = sarm2_bringup.spiral_loop:main',
            'sarm2_demo = sarm2_bringup.demo:main',
        ],
    },
)
