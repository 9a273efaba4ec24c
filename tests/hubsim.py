"""The two things the Koji hub does with a plugin, done as the hub does them,
for the tests, the demo, the benchmark and tests/hub_request.py:

- load it with koji's own PluginTracker and register its callbacks as
  kojixmlrpc's HandlerRegistry.register_plugin does;
- run one request that imports signatures: postRPMSign for each, with the
  arguments add_rpm_sig passes, then postCommit unless the transaction
  rolls back (kojixmlrpc skips it then), in a fresh request context.

kojihub itself is not in the koji package on PyPI, hence these few lines.
"""

import os

import koji
import koji.plugin
from koji.context import context

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_plugin(conf_path, plugin_dir=ROOT):
    """The plugin module, loaded, configured with conf_path and registered;
    returns (module, registered callbacks)."""
    module = koji.plugin.PluginTracker(path=[plugin_dir]).load('rekor_log', reload=True)
    module.CONFIG_FILE = str(conf_path)
    module.CONFIG = None
    return module, register_like_the_hub(module)


def register_like_the_hub(module):
    registered = []
    for value in vars(module).values():
        if isinstance(value, type) or not callable(value):
            continue
        for cbtype in getattr(value, 'callbacks', None) or ():
            koji.plugin.register_callback(cbtype, value)
            registered.append((cbtype, value))
    return registered


def unregister(registered):
    for cbtype, func in registered:
        koji.plugin.callbacks[cbtype].remove(func)


def signature_import(imported, **overrides):
    """The keyword arguments add_rpm_sig passes to postRPMSign, from a
    KojiImport or a dict of the same fields."""
    get = imported.get if isinstance(imported, dict) else lambda k: getattr(imported, k)
    kws = {k: get(k) for k in ('sigkey', 'sighash', 'build', 'rpm')}
    kws.update(overrides)
    return kws


def hub_request(imports, commit=True, **overrides):
    """One hub request importing these signatures."""
    context._threadclear()
    try:
        for imported in imports:
            koji.plugin.run_callbacks('postRPMSign', **signature_import(imported, **overrides))
        if commit:
            koji.plugin.run_callbacks('postCommit')
    finally:
        context._threadclear()
