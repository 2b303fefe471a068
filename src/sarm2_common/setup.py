"""Install the sarm2_common ROS 2 package (ament_python)."""

from setuptools import find_packages, setup

PACKAGE = 'sarm2_common'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    # The task catalogue is package data: every node finds a task's instruction.
    package_data={PACKAGE: ['tasks.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='SARM2 maintainers',
    maintainer_email='maintainers@sarm2.dev',
    description='Shared SARM2 helpers: bags, episodes, vocabulary, images, tasks, ROS glue.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
        ],
    },
)
