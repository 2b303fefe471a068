"""Install the sarm2_reward ROS 2 package (ament_python)."""

from setuptools import find_packages, setup

PACKAGE = 'sarm2_reward'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    # The labelling page's static files (label_rollouts serves them).
    package_data={PACKAGE: ['label_page/*.html', 'label_page/*.js', 'label_page/*.css']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='SARM2 maintainers',
    maintainer_email='maintainers@sarm2.dev',
    description='SARM2 stage-aware reward model and live reward node.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'train_reward_model = sarm2_reward.train:main',
            'evaluate_reward_model = sarm2_reward.evaluation:main',
            'reward_node = sarm2_reward.ros.reward_node:main',
            'lrm_merge_adapter = sarm2_reward.lrm.merge_adapter:main',
            'export_lerobot = sarm2_reward.lerobot_export:main',
            'label_rollouts = sarm2_reward.label_server:main',
        ],
    },
)
