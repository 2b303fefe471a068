"""Install the spiral_policy ROS 2 package (ament_python)."""

from setuptools import find_packages, setup

PACKAGE = 'spiral_policy'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
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
        ],
    },
)
