"""Instructions from the simulated arm's task catalogue, for nodes that are given only a task."""


def catalogue_instruction(task: str) -> str:
    """Return the catalogue's instruction for ``task``, or '' when there is none.

    Empty also when sarm2_sim is not installed (a robot without the simulator) or its catalogue
    cannot be read: callers then fall back to an instruction they were given.
    """
    try:
        from sarm2_sim.catalogue import load_catalogue

        spec = load_catalogue().get(task)
    except (ImportError, OSError, ValueError):
        return ''
    return spec.instruction if spec is not None else ''
