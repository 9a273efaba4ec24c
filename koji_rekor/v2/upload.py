"""Log one RPM's header signature in a Rekor v2 shard: the entry from the
headers (hashedrekord), then the write (client). Verifying what comes
back (the TransparencyLogEntry, or the checkpoint and tiles of a 409) is
the verify side's (rekor_v2.entry, rekor_v2.tiles); this returns what it
needs. The work is the same at any package size: the payload is not read.
"""

from dataclasses import dataclass
from typing import Union

from . import client as v2client
from . import hashedrekord


@dataclass(frozen=True)
class Uploaded:
    entry: hashedrekord.HashedRekord
    answer: Union[v2client.Created, v2client.AlreadyLogged]

    @property
    def created(self):
        return isinstance(self.answer, v2client.Created)


def upload_rpm(path, armored_key, settings, sighdr=None, deadline=None, spent=None):
    """Log the header signature of the RPM at path (or of sighdr, Koji's
    sigcache copy, spliced onto it) made by armored_key's (sub)key.
    NotLoggableInV2 before anything is sent when v2 cannot hold it."""
    entry = hashedrekord.from_rpm_file(path, armored_key, sighdr=sighdr)
    with v2client.V2Client(settings, deadline=deadline, spent=spent) as client:
        return Uploaded(entry, client.create_entry(entry))
