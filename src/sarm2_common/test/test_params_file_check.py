"""The params-file check every node runs before rcl reads its --params-file arguments."""

import yaml
from sarm2_common.ros.spin import params_file_problem


def test_a_params_file_written_by_launch_ros_is_accepted(tmp_path):
    # launch_ros normalises list parameters to tuples and yaml.dump()s them: the file that
    # `ros2 launch sarm2_bringup sim.launch.py` hands each node looks like this.
    path = tmp_path / 'launch_params'
    path.write_text(yaml.dump({'/**': {'ros__parameters': {
        'cameras': ('corner',), 'image_size': 64, 'task': 'reach-v3'}}}))
    assert '!!python/tuple' in path.read_text()
    assert params_file_problem(['node', '--params-file', str(path)]) == ''


def test_bad_params_files_are_one_line(tmp_path):
    unsafe = tmp_path / 'unsafe.yaml'
    unsafe.write_text('node:\n  ros__parameters:\n    x: !!python/object/apply:os.getcwd []\n')
    assert 'not valid YAML' in params_file_problem(['--params-file', str(unsafe)])
    flat = tmp_path / 'flat.yaml'
    flat.write_text('control_rate: 20.0\n')
    assert 'expected "<node name>: {ros__parameters' in params_file_problem(
        ['--params-file', str(flat)])
    missing = tmp_path / 'missing.yaml'
    assert params_file_problem(['--params-file', str(missing)]) == (
        f'params file {missing}: No such file or directory')
