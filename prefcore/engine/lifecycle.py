"""Firing lifecycle hooks so that one failing plugin cannot end a run.

A logger that raises in ``prefcore_train_step_end`` (a full disk, a dropped connection to
an experiment tracker) should cost its own output, not hours of training. Each
implementation is therefore called on its own, through pluggy's ``subset_hook_caller``,
so pluggy's tracing, call monitoring and hook wrappers still see every call. An exception
(not ``KeyboardInterrupt`` or ``SystemExit``) is logged once per plugin and hook, with the
plugin's name and the traceback, and the other implementations still run.
"""

from __future__ import annotations

import logging
from typing import Any

import pluggy

logger = logging.getLogger("prefcore.hooks")


class LifecycleHooks:
    """Calls the lifecycle hooks of a plugin manager, implementation by implementation.

    Arguments:
        plugin_manager: the manager whose plugins listen (built-in loggers included).
    """

    def __init__(self, plugin_manager: pluggy.PluginManager) -> None:
        self.plugin_manager = plugin_manager
        self.failures: dict[tuple[str, str], int] = {}

    def fire(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook_name`` (last registered first, as pluggy does)."""
        manager = self.plugin_manager
        caller = getattr(manager.hook, hook_name)
        implementations = [
            impl for impl in caller.get_hookimpls() if not (impl.hookwrapper or getattr(impl, "wrapper", False))
        ]
        for plugin in [impl.plugin for impl in reversed(implementations)]:
            others = [impl.plugin for impl in implementations if impl.plugin is not plugin]
            try:
                manager.subset_hook_caller(hook_name, others)(**kwargs)
            except Exception as error:  # a listener's failure must not end the run
                self._report(manager.get_name(plugin) or repr(plugin), hook_name, error)

    def _report(self, plugin_name: str, hook_name: str, error: Exception) -> None:
        key = (plugin_name, hook_name)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.failures[key] == 1:
            logger.error(
                "plugin %r failed in %s (%s: %s); the run goes on without it there "
                "(further failures of this plugin in this hook are counted, not shown).",
                plugin_name,
                hook_name,
                type(error).__name__,
                error,
                exc_info=error,
            )

    def summary(self) -> None:
        """Log how often each failing plugin failed (called at the end of a run)."""
        for (plugin_name, hook_name), count in self.failures.items():
            if count > 1:
                logger.warning("plugin %r failed %d times in %s.", plugin_name, count, hook_name)
