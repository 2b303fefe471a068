"""Install the sarm2_sim ROS 2 package (ament_python)."""

from setuptools import find_packages, setup

PACKAGE = 'sarm2_sim'

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
    description='Simulated arm (Meta-World) on real-arm topics, and demo recorder.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'sim_node = sarm2_sim.ros.sim_node:main',
            'record_demos = sarm2_sim.demonstrations:main',
            'label_rollouts_from_sim = sarm2_sim.sim_labels:main',
        ],
    },
)
