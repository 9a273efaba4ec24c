"""A stand-in for the Koji hub's anonymous read calls the monitor makes
(getRPM, queryRPMSigs, getBuild), over XML-RPC on 127.0.0.1, answering
from the signature imports a test laid out with rpmfactory, so the
monitor's fast tests need no database. The same calls against the real
hub are tested with tests/support/realhub.py.

koji.ClientSession sends keyword arguments as a last struct marked
__starstar, as the hub's own dispatcher expects; this reads them the same way.
"""

import threading
import xmlrpc.server

import koji


def _split_kwargs(args):
    if args and isinstance(args[-1], dict) and args[-1].get('__starstar'):
        kwargs = dict(args[-1])
        del kwargs['__starstar']
        return list(args[:-1]), kwargs
    return list(args), {}


def _plain(info):
    """The fields XML-RPC carries (the hub sends timestamps as strings)."""
    return {k: (v.isoformat() if hasattr(v, 'isoformat') else v) for k, v in info.items()}


class _Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    rpc_paths = ('/kojihub',)


class KojiDouble:
    def __init__(self):
        self.rpms = {}        # rpm id -> rpminfo
        self.builds = {}      # build id -> buildinfo
        self.signatures = {}  # rpm id -> [{rpm_id, sigkey, sighash}]
        self.calls = []
        self.down = False
        self.server = xmlrpc.server.SimpleXMLRPCServer(('127.0.0.1', 0), allow_none=True,
                                                       logRequests=False, requestHandler=_Handler)
        self.server.register_function(self._call('getRPM', self.get_rpm), 'getRPM')
        self.server.register_function(self._call('queryRPMSigs', self.query_rpm_sigs),
                                      'queryRPMSigs')
        self.server.register_function(self._call('getBuild', self.get_build), 'getBuild')
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={'poll_interval': 0.1}, daemon=True)

    @property
    def url(self):
        return 'http://127.0.0.1:%d/kojihub' % self.server.server_address[1]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def add(self, imported):
        """What the hub holds after importing this signature (a KojiImport)."""
        self.builds[imported.build['id']] = _plain(imported.build)
        self.rpms[imported.rpm['id']] = _plain(imported.rpm)
        if imported.sigkey:
            sigs = self.signatures.setdefault(imported.rpm['id'], [])
            sigs[:] = [s for s in sigs if s['sigkey'] != imported.sigkey]
            sigs.append({'rpm_id': imported.rpm['id'], 'sigkey': imported.sigkey,
                         'sighash': imported.sighash})

    def delete_signature(self, imported):
        """deleteRPMSig: the row goes, and no callback tells the plugin."""
        self.signatures[imported.rpm['id']] = [
            s for s in self.signatures.get(imported.rpm['id'], [])
            if s['sigkey'] != imported.sigkey]

    def _call(self, name, func):
        def call(*args):
            if self.down:
                raise koji.GenericError('the hub is down for maintenance')
            args, kwargs = _split_kwargs(args)
            self.calls.append(name)
            return func(*args, **kwargs)
        return call

    def get_rpm(self, rpminfo, strict=False, multi=False):
        """By N-V-R.A, or by ID (an int), as the hub's getRPM takes either
        (kojihub get_rpm: rpminfo is an ID, an N-V-R.A or a map)."""
        if isinstance(rpminfo, int):
            return self.rpms.get(rpminfo)
        for info in self.rpms.values():
            if '%(name)s-%(version)s-%(release)s.%(arch)s' % info == rpminfo:
                return info
        return None

    def query_rpm_sigs(self, rpm_id=None, sigkey=None, queryOpts=None):
        # kojihub query_rpm_sigs: every signature when no rpm_id is given
        rows = (self.signatures.get(rpm_id, []) if rpm_id is not None
                else [s for sigs in self.signatures.values() for s in sigs])
        return [s for s in rows if sigkey is None or s['sigkey'] == sigkey]

    def get_build(self, buildInfo, strict=False):
        return self.builds.get(buildInfo)
