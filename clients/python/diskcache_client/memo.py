"""Memoization keys and the "no value" marker, as python-diskcache makes
them; shared by :class:`~diskcache_client.cache.Cache`,
:class:`~diskcache_client.persistent.Index` and the Django backend."""

# Marker for "no value", like python-diskcache's ENOVAL.
ENOVAL = type('ENOVAL', (), {'__repr__': lambda self: 'ENOVAL'})()


def full_name(func):
    """``module.qualname`` of a callable, as python-diskcache names memoized
    functions."""
    return func.__module__ + '.' + func.__qualname__


def args_to_key(base, args, kwargs, typed, ignore):
    """Build a memoization key the way python-diskcache does, so that keys
    made here and by python-diskcache are equal.

    The key is ``base`` followed by the positional arguments not in
    ``ignore`` (by index), a ``None`` separator, then name and value of each
    keyword argument not in ``ignore``, sorted by name; with ``typed`` the
    types of those positional and then keyword values follow.
    """
    kept_args = tuple(arg for index, arg in enumerate(args) if index not in ignore)
    key = tuple(base) + kept_args + (None,)
    kept_kwargs = []
    if kwargs:
        kept_kwargs = sorted(
            (name, value) for name, value in kwargs.items() if name not in ignore)
        for name, value in kept_kwargs:
            key += (name, value)
    if typed:
        key += tuple(type(arg) for arg in kept_args)
        if kwargs:
            key += tuple(type(value) for _, value in kept_kwargs)
    return key
