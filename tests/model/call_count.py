"""A function wrapped to count its calls (of the model's tests)."""


def counting(fn):
    """(wrapper, calls): `wrapper` runs `fn` and appends to the list `calls` each time."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapper, calls
