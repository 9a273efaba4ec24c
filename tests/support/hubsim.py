"""The two things the Koji hub does with a plugin, done as the hub does them,
for the tests, the demo, the benchmark and tests/support/hub_request.py:

- load it with koji's own PluginTracker and register its callbacks as
  kojixmlrpc's HandlerRegistry.register_plugin does;
- run one request that imports signatures: postRPMSign for each, with the
  arguments add_rpm_sig passes, then postCommit unless the transaction
  rolls back (kojixmlrpc skips it then), in a fresh request context.

kojihub itself is not in the koji package on PyPI, hence these few lines.
"""

import http.server
import os
import sys
import threading
import types

import koji
import koji.plugin
import koji.util
import koji.xmlrpcplus
from koji.context import context

from tests.support.common import ROOT

# kojixmlrpc's HandlerRegistry.funcs: the hub calls, by name.
HANDLERS = {}


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
        if getattr(value, 'exported', False):
            name = getattr(value, 'export_alias', value.__name__)
            HANDLERS[name] = value
            registered.append((None, name))
        for cbtype in getattr(value, 'callbacks', None) or ():
            koji.plugin.register_callback(cbtype, value)
            registered.append((cbtype, value))
    return registered


def unregister(registered):
    for cbtype, func in registered:
        if cbtype is None:
            HANDLERS.pop(func, None)
        else:
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


# --- hub calls ----------------------------------------------------------------

def hub_call(method, *args, **kwargs):
    """One hub request calling a registered function, as kojixmlrpc's
    _dispatch does (the handler by name, named arguments through
    koji.encode_args/decode_args, call_with_argcheck), in a fresh request
    context; the answer goes through Koji's XML-RPC marshaller both ways, so
    what cannot cross the wire fails here too."""
    func = HANDLERS.get(method)
    if func is None:
        raise koji.GenericError('Invalid method: %s' % method)
    context._threadclear()
    try:
        context.method = method
        context.params = koji.encode_args(*args, **kwargs)
        params, opts = koji.decode_args(*context.params)
        result = koji.util.call_with_argcheck(func, params, opts)
    finally:
        context._threadclear()
    wire = koji.xmlrpcplus.dumps((result,), methodresponse=1, allow_none=1)
    return koji.xmlrpcplus.loads(wire)[0][0]


class HubServer:
    """The hub calls over XML-RPC on 127.0.0.1 (with Koji's multiCall), for
    the koji command line; each call is one hub_call."""

    def __init__(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                params, method = koji.xmlrpcplus.loads(body)
                try:
                    if method == 'multiCall':
                        result = [outer.multicall_one(call) for call in params[0]]
                    else:
                        result = hub_call(method, *params)
                    answer = koji.xmlrpcplus.dumps((result,), methodresponse=1, allow_none=1)
                except Exception as e:
                    answer = koji.xmlrpcplus.dumps(koji.xmlrpcplus.Fault(
                        getattr(e, 'faultCode', 1), str(e)), methodresponse=1)
                data = answer.encode()
                self.send_response(200)
                self.send_header('Content-Type', 'text/xml')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d/kojihub' % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def multicall_one(call):
        try:
            return [hub_call(call['methodName'], *call['params'])]
        except Exception as e:
            return {'faultCode': getattr(e, 'faultCode', 1), 'faultString': str(e)}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


# --- kojihub ------------------------------------------------------------------

def install_kojihub(imports):
    """The module kojihub as a hub plugin's call sees it, with the functions
    the plugin uses (get_rpm, get_build, query_rpm_sigs, list_rpms) answering
    as kojihub does for these imported signatures (KojiImports), and the
    matching hub calls registered. kojihub is not on PyPI, hence these."""
    builds, rpms, sigs = {}, {}, []
    for imported in imports:
        builds[imported.build['id']] = imported.build
        rpms[imported.rpm['id']] = dict(imported.rpm)
        sig = {'rpm_id': imported.rpm['id'], 'sigkey': imported.sigkey,
               'sighash': imported.sighash}
        if sig not in sigs:
            sigs.append(sig)

    def get_rpm(rpminfo, strict=False, multi=False):
        if isinstance(rpminfo, int) or (isinstance(rpminfo, str) and rpminfo.isdigit()):
            data = {'id': int(rpminfo)}
        elif isinstance(rpminfo, str):
            data = koji.parse_NVRA(rpminfo)
        elif isinstance(rpminfo, dict):
            data = rpminfo
        else:
            raise koji.GenericError('Invalid type for rpminfo: %r' % type(rpminfo))
        found = [r for r in rpms.values() if all(
            r.get(k) == data[k] for k in ('id', 'name', 'version', 'release', 'arch')
            if k in data)]
        if multi:
            return found
        if not found and strict:
            raise koji.GenericError('No such rpm: %r' % data)
        return found[0] if found else None

    def get_build(buildInfo, strict=False):
        if isinstance(buildInfo, int) or (isinstance(buildInfo, str) and buildInfo.isdigit()):
            found = builds.get(int(buildInfo))
        else:
            data = koji.parse_NVR(buildInfo) if isinstance(buildInfo, str) else buildInfo
            found = next((b for b in builds.values() if all(
                b.get(k) == data[k] for k in ('name', 'version', 'release'))), None)
        if found is None and strict:
            raise koji.GenericError('No such build: %s' % buildInfo)
        return found

    def query_rpm_sigs(rpm_id=None, sigkey=None, queryOpts=None):
        if rpm_id is not None and not isinstance(rpm_id, int):
            rpminfo = get_rpm(rpm_id)
            if not rpminfo:
                return []
            rpm_id = rpminfo['id']
        return [dict(s) for s in sigs if rpm_id in (None, s['rpm_id'])
                and sigkey in (None, s['sigkey'])]

    def list_rpms(buildID=None, arches=None, **kws):
        return [r for r in rpms.values() if buildID in (None, r['build_id'])
                and (not arches or r['arch'] in arches)]

    module = types.ModuleType('kojihub')
    module.get_rpm, module.get_build = get_rpm, get_build
    module.query_rpm_sigs, module.list_rpms = query_rpm_sigs, list_rpms
    sys.modules['kojihub'] = module
    HANDLERS.update(getRPM=get_rpm, getBuild=get_build, queryRPMSigs=query_rpm_sigs,
                    listRPMs=list_rpms, getAPIVersion=lambda: koji.API_VERSION)
    return module


def uninstall_kojihub():
    sys.modules.pop('kojihub', None)
    for name in ('getRPM', 'getBuild', 'queryRPMSigs', 'listRPMs', 'getAPIVersion'):
        HANDLERS.pop(name, None)
