"""Bounds on the strings nodes accept from other nodes (services, goals, status messages).

Tasks, instructions and episode ids are copied into every reward message, status and bag
record; a 10 MB instruction would make every StageReward 10 MB. Longer values are refused.
"""

MAX_TASK_LENGTH = 128
MAX_INSTRUCTION_LENGTH = 2000
MAX_EPISODE_ID_LENGTH = 64


def string_problem(task: str = '', instruction: str = '', episode_id: str = '') -> str:
    """Say which string is too long ('' when all fit)."""
    for name, value, limit in (('task', task, MAX_TASK_LENGTH),
                               ('instruction', instruction, MAX_INSTRUCTION_LENGTH),
                               ('episode_id', episode_id, MAX_EPISODE_ID_LENGTH)):
        if len(value) > limit:
            return f'{name} has {len(value)} characters; at most {limit}'
    return ''
