"""Built-in method plugins, one module per method, installed as ``prefcore.plugins``.

Each module is registered through prefcore's own ``[project.entry-points.prefcore]``,
exactly like a third-party plugin.
"""
